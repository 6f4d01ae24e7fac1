"""Sweeps on a shared cluster (common/sweep.py): account, QoS and constraint flags, submit
and return (--no-wait) with the job ids recorded beside the chunks, --collect without
resubmitting running chunks, and --dry-run. submitit is faked at the executor boundary
(make_submitit_executor and job_is_active), so these run without it or Slurm."""
import pytest

from common import sweep
from common.sweep import GridError, SlurmOptions, SweepIncomplete, SweepSubmitted
from tests.core.test_sweep import GRID, SEEDS, fake_runner, run, table_bytes


class FakeJob:
    def __init__(self, job_id, fn, args):
        self.job_id, self._fn, self._args, self.ran = job_id, fn, args, False

    def finish(self):
        """The task runs on the cluster: it writes its chunk file."""
        if not self.ran:
            self.ran = True
            self._fn(*self._args)

    def done(self):
        self.finish()
        return True

    def result(self):
        self.finish()
        return {"index": self._args[1].index, "members": self._args[1].members}

    def cancel(self, check=True):
        pass


class FakeCluster:
    """submit -> jobs that run only when asked; job_is_active: the recorded job's state."""

    def __init__(self, monkeypatch):
        self.submitted, self.jobs, self.arrays = [], {}, 0
        self.progressing = False   # True: a job asked about runs to its end (a live cluster)
        monkeypatch.setattr(sweep, "make_submitit_executor", self.executor)
        monkeypatch.setattr(sweep, "job_is_active", self.active)

    def executor(self, folder, options):
        options.parameters()
        cluster = self

        class Executor:
            def map_array(self, fn, runners, chunks, outs):
                cluster.arrays += 1
                jobs = [FakeJob(f"{100 + cluster.arrays}_{i}", fn, (r, c, o))
                        for i, (r, c, o) in enumerate(zip(runners, chunks, outs))]
                cluster.submitted += [c.hash for c in chunks]
                cluster.jobs.update({j.job_id: j for j in jobs})
                return jobs
        return Executor()

    def active(self, out, record):
        job = self.jobs.get(record.get("job_id"))
        if job is not None and self.progressing:   # running when first asked, then done
            job.asked = getattr(job, "asked", 0) + 1
            if job.asked > 1:
                job.finish()
        return job is not None and not job.ran

    def finish(self, n=None):
        for job in list(self.jobs.values())[:n]:
            job.finish()


SLURM = dict(batch=6, executor="slurm", poll_s=0.01, slurm=SlurmOptions(account="lab"))


def test_no_wait_submits_records_job_ids_and_returns(tmp_path, monkeypatch):
    cluster = FakeCluster(monkeypatch)
    with pytest.raises(SweepSubmitted) as info:
        run(tmp_path / "s", submit_only=True, **SLURM)
    chunks = sweep.plan(GRID, SEEDS, 6, runner=sweep.runner_name(fake_runner))
    assert len(info.value.job_ids) == len(chunks) == len(cluster.submitted)
    assert "gather them with --collect" in str(info.value)
    assert not any(job.ran for job in cluster.jobs.values())        # returned at once
    records = [sweep.load_job_record(tmp_path / "s", c) for c in chunks]
    assert [r["job_id"] for r in records] == info.value.job_ids
    # a second submission while they run submits nothing again
    with pytest.raises(SweepSubmitted):
        run(tmp_path / "s", submit_only=True, **SLURM)
    assert cluster.arrays == 1 and len(cluster.submitted) == len(chunks)


def test_collect_gathers_finished_chunks_and_never_submits(tmp_path, monkeypatch):
    run(tmp_path / "ref", batch=6)
    cluster = FakeCluster(monkeypatch)
    with pytest.raises(SweepSubmitted):
        run(tmp_path / "s", submit_only=True, **SLURM)
    cluster.finish(2)
    with pytest.raises(SweepIncomplete, match=r"2 of 5 chunks are done, 3 still running "
                                              r"\(jobs 101_2, 101_3, 101_4\), 0 missing"):
        run(tmp_path / "s", collect_only=True, **SLURM)
    cluster.finish()
    res = run(tmp_path / "s", collect_only=True, **SLURM)
    assert cluster.arrays == 1 and res.summary["skipped"] == 5
    assert table_bytes(tmp_path / "s") == table_bytes(tmp_path / "ref")


def test_collect_names_chunks_that_no_job_will_write(tmp_path, monkeypatch):
    FakeCluster(monkeypatch)
    with pytest.raises(SweepIncomplete, match="0 still running .* 5 missing"):
        run(tmp_path / "s", collect_only=True, **SLURM)


def test_a_rerun_waits_for_running_jobs_instead_of_resubmitting(tmp_path, monkeypatch):
    """The submitting process died; the rerun submits only the chunks no job computes."""
    cluster = FakeCluster(monkeypatch)
    with pytest.raises(SweepSubmitted):
        run(tmp_path / "s", submit_only=True, **SLURM)
    first = list(cluster.submitted)
    lost = sweep.plan(GRID, SEEDS, 6, runner=sweep.runner_name(fake_runner))[0]
    sweep.job_record_path(tmp_path / "s", lost).unlink()           # its job was never recorded
    cluster.progressing = True
    res = run(tmp_path / "s", **SLURM)                             # waits for the others
    assert cluster.submitted[len(first):] == [lost.hash]
    assert res.summary["done"] == 5 and len(res.rows) == 30


def test_dry_run_prints_chunks_and_the_array_and_touches_nothing(tmp_path, monkeypatch):
    FakeCluster(monkeypatch)
    out = tmp_path / "s"
    chunks = sweep.plan(GRID, SEEDS, 6, runner=sweep.runner_name(fake_runner))
    opts = SlurmOptions(partition="gpu", time="1:00:00", account="lab", qos="short",
                        constraint="a100|h100", array_parallelism=2)
    text = sweep.dry_run_text(chunks, out, "slurm", opts)
    assert "5 chunk(s)" in text and "5 to run" in text and text.count("to run\n") == 5
    for line in ("--array=0-4%2", "--partition=gpu", "--time=60", "--account=lab",
                 "--qos=short", "--constraint=a100|h100"):
        assert f"#SBATCH {line}" in text, line
    assert not out.exists()


@pytest.mark.parametrize("opts, words", [
    (SlurmOptions(account="lab\n#SBATCH --x"), "--slurm-account"),
    (SlurmOptions(qos="two words"), "--slurm-qos 'two words'"),
])
def test_cluster_options_are_one_word_each(opts, words):
    with pytest.raises(GridError, match=words):
        opts.parameters()


def test_account_qos_constraint_reach_the_executor(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(sweep, "make_submitit_executor",
                        lambda folder, o: seen.setdefault("p", o.parameters()) and None)
    opts = SlurmOptions(account="lab", qos="short", constraint="a100")
    assert opts.parameters()["slurm_additional_parameters"] == {
        "account": "lab", "qos": "short", "constraint": "a100"}


def test_no_wait_needs_slurm(tmp_path):
    with pytest.raises(GridError, match="--no-wait"):
        run(tmp_path / "s", submit_only=True)


def test_the_sweep_script_dry_run_prints_the_array_and_writes_nothing(tmp_path, capsys):
    from experiments import sweep as study

    study.main(["--quick", "--dry-run", "--executor", "slurm", "--slurm-account", "lab",
                "--slurm-qos", "short", "--slurm-constraint", "a100", "--out",
                str(tmp_path / "o")])
    text = capsys.readouterr().out
    assert "to run" in text and "#SBATCH --account=lab" in text
    assert "#SBATCH --qos=short" in text and "#SBATCH --constraint=a100" in text
    assert not any(tmp_path.iterdir())

"""Sources of target patterns beyond patterns.py (e.g. audio spectrograms, inputs.audio).

Every source returns what patterns.make_pattern returns: an (H, W) float tensor with
values in [0, patterns.PEAK], so any study can store or cue it unchanged.
"""

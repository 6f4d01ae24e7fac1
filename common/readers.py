"""Reading the text files users write: YAML (or JSON) with every key once."""
from __future__ import annotations


def load_yaml_unique(text: str, where: str):
    """yaml.safe_load, refusing a mapping that repeats a key (safe_load keeps the last);
    any problem is one ValueError line starting with `where`."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ValueError(f"{where}: key {key!r} appears twice (line "
                                 f"{key_node.start_mark.line + 1})")
            seen.add(key)
        return loader.construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)   # a SafeLoader: no tags run code
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{where}: not valid YAML{line} "
                         f"({getattr(exc, 'problem', None) or exc})") from None

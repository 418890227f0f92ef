"""YAML for files people edit by hand (policies): a key given twice is an error.

PyYAML's ``safe_load`` keeps the last of two equal keys silently, so a policy with a
section pasted twice would run on whichever copy came last; here it is refused instead.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping names the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(
                    "while constructing a mapping",
                    node.start_mark,
                    f"key {key!r} appears twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """``yaml.safe_load`` that refuses a mapping with a repeated key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


__all__ = ["DuplicateKey", "load"]

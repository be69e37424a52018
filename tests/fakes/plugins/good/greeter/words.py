from __future__ import annotations


def greeting(word: str, name: str) -> str:
    return f"{word}, {name}!"

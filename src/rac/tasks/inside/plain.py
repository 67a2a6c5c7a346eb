"""Plain data: the only kind of value that crosses a sandbox's wall.

A value is plain if it is built, with the exact built-in types (no subclasses), from ``None``,
``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``set`` and
``dict``, nested at most ``MAX_DEPTH`` deep. Anything else (an object with its own ``__eq__``, a
generator, a class instance) is not plain, so a program cannot answer with something that
compares equal to everything.

Wire form: one JSON document. ``None``/``bool``/``int``/``float``/``str``/``list`` are JSON's own
(``NaN`` and ``Infinity`` as Python's json writes them); the others are one-key objects:
``{"t": [...]}`` tuple, ``{"s": [...]}`` set, ``{"d": [[key, value], ...]}`` dict,
``{"b": "<hex>"}`` bytes, ``{"c": [real, imag]}`` complex. Decoding rebuilds only these types.

Stdlib only: this file runs inside the sandbox (the harness) and outside it (the verdict). Writing
needs no ``json`` (slow to import, and a sandbox's start-up is on every test's path).
"""

from __future__ import annotations

import os
from _json import encode_basestring_ascii as _quote  # json's own string quoting, without json

MAX_DEPTH = 100
SCALARS = (bool, int, float, str)


class NotPlain(TypeError):
    """The value (or a part of it) is not plain data."""


def _float(x: float) -> str:
    if x != x:
        return "NaN"
    return float.__repr__(x) if abs(x) != float("inf") else ("Infinity" if x > 0 else "-Infinity")


def _text(x: object, sort: bool, depth: int) -> str:
    """Wire-form text of ``x``; ``sort``: sets and dicts in a canonical order, ``-0.0`` as ``0.0``."""
    t = type(x)
    if x is None or t is bool:
        return {None: "null", True: "true", False: "false"}[x]
    if t is int:
        return int.__repr__(x)  # ValueError past the interpreter's digit limit
    if t is float:
        return _float(x + 0.0 if sort else x)
    if t is str:
        return _quote(x)
    if depth >= MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    if t in (list, tuple, set):
        items = [_text(v, sort, depth + 1) for v in x]
        body = "[" + ",".join(sorted(items) if sort and t is set else items) + "]"
        tag = "t" if t is tuple else "s"
        return body if t is list else f'{{"{tag}":{body}}}'
    if t is dict:
        pairs = [f"[{_text(k, sort, depth + 1)},{_text(v, sort, depth + 1)}]" for k, v in x.items()]
        return '{"d":[' + ",".join(sorted(pairs) if sort else pairs) + "]}"
    if t is bytes:
        return '{"b":"' + x.hex() + '"}'
    if t is complex:
        return '{"c":[' + _float(x.real) + "," + _float(x.imag) + "]}"
    raise NotPlain(f"a value of type {t.__name__} is not plain data")


def encode(x: object) -> str:
    """``x`` as one line of wire form; ``NotPlain`` if it is not plain data."""
    try:
        return _text(x, False, 0)
    except (ValueError, RecursionError) as e:  # an int too long to write out, say
        raise NotPlain(str(e)) from None


def canonical(x: object) -> str:
    """Two plain values are the same answer iff their canonical texts are equal: types included
    (``True`` is not ``1``, ``1`` is not ``1.0``), order of sets and dict keys ignored."""
    try:
        return _text(x, True, 0)
    except (ValueError, RecursionError) as e:
        raise NotPlain(str(e)) from None


def send(fd: int, line: str) -> None:
    """Write one line to descriptor ``fd``, all of it."""
    data = line.encode() + b"\n"
    while data:
        data = data[os.write(fd, data):]


def untree(node: object, depth: int = 0) -> object:
    """The value a wire-form tree stands for; ``ValueError`` for anything else."""
    t = type(node)
    if node is None or t in SCALARS:
        return node
    if depth >= MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    if t is list:
        return [untree(v, depth + 1) for v in node]
    if t is dict and len(node) == 1:
        (tag, body), = node.items()
        try:
            return _TAGS[tag](body, depth + 1)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not plain data: {e}") from None
    raise ValueError(f"not plain data: {str(node)[:80]}")


def _items(body: object, depth: int) -> list:
    if type(body) is not list:
        raise TypeError("a container's body must be a list")
    return [untree(v, depth) for v in body]


def _pairs(body: object, depth: int) -> dict:
    if type(body) is not list or any(type(kv) is not list or len(kv) != 2 for kv in body):
        raise TypeError("a dict's body must be a list of [key, value] pairs")
    return {untree(k, depth): untree(v, depth) for k, v in body}


def _complex(body: object, depth: int) -> complex:
    if type(body) is not list or len(body) != 2 or any(type(v) not in (int, float) for v in body):
        raise TypeError("a complex number's body must be [real, imag]")
    return complex(*body)


def _bytes(body: object, depth: int) -> bytes:
    if type(body) is not str:
        raise TypeError("a bytes body must be a hex string")
    return bytes.fromhex(body)


_TAGS = {"t": lambda b, d: tuple(_items(b, d)), "s": lambda b, d: set(_items(b, d)), "d": _pairs,
         "b": _bytes, "c": _complex}


def decode(text: str | bytes) -> object:
    """The plain value in one wire-form document; ``ValueError`` if it is anything else. (json is
    imported here, not above: a harness that only reports never pays for it.)"""
    import json

    try:
        return untree(json.loads(text))
    except RecursionError:
        raise ValueError("nested too deep") from None


def literal(text: str) -> object:
    """A value written as a Python literal of plain data (a test's ``expected``, ``repr`` of the
    value); ``ValueError`` otherwise. Used outside the sandbox only (hence the late import: ``ast``
    is slow to import, and a sandbox's start-up is on every test's path)."""
    import ast

    try:
        value = ast.literal_eval(text)
        encode(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # NotPlain too
        raise ValueError(f"{text[:60]!r} is not a Python literal of plain data (write the value's "
                         "repr: numbers, strings, bytes, None, True/False, lists, tuples, sets, "
                         "dicts of those)") from None
    return value

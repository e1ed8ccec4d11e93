"""Every public name has a docstring a user can act on: the API reference (docs/reference.md)
is generated from them.

Walks ``robustpool.__all__``; for a class, every public attribute robustpool defines on it or
on one of its robustpool bases (PoolBase, ExecutorBase, ...): methods, properties and
classmethods by their own docstring; data (dataclass fields, class attributes, and the
attributes its methods set on ``self``) by a ``:ivar name:`` (or ``:var:``/``:cvar:``) field of
the class's docstring. What comes from the standard library (``object``, ``Exception``,
``concurrent.futures.Executor``/``Future``) is skipped unless robustpool overrides it. Each
test fails listing every name at fault, not only the first.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

import robustpool

MIN_CHARS = 20  # shorter than this, a docstring cannot say what a name does

# The classes users build themselves: their constructor's parameters are documented as
# ``:param name:`` fields of the class docstring (the reference merges __init__ into the class).
CONSTRUCTED = ("RobustPool", "RobustThreadPool", "RobustExecutor", "RobustThreadPoolExecutor")

_FIELD = re.compile(r"^[ \t]*:(?P<kind>\w+)[ \t]+(?P<name>[\w*]+):(?P<text>.*?)(?=^[ \t]*:\w|\Z)", re.MULTILINE | re.DOTALL)


def _words(text: str | None) -> str:
    return " ".join((text or "").split())


def _fields(doc: str | None, kinds: tuple[str, ...]) -> dict[str, str]:
    """The ``:kind name: text`` fields of a docstring, by name, for the given kinds."""
    found: dict[str, str] = {}
    for m in _FIELD.finditer(inspect.cleandoc(doc or "")):
        if m["kind"] in kinds:
            found[m["name"].lstrip("*")] = _words(m["text"])
    return found


def _ours(cls: type) -> bool:
    return cls.__module__ == "robustpool" or cls.__module__.startswith("robustpool.")


def _class_doc(cls: type) -> str:
    """A class's own docstring (``inspect.getdoc`` would inherit a base's); a dataclass's
    generated signature line does not count."""
    doc = vars(cls).get("__doc__")
    if not isinstance(doc, str):
        return ""
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return ""
    return doc


def _self_attributes(cls: type) -> set[str]:
    """The public attributes the methods of ``cls`` (its own body) set on ``self``.

    Read from each method's source: the class's own source cannot be looked up, since the
    public classes say ``__module__ = "robustpool"`` (where users import them from)."""
    names: set[str] = set()
    for value in vars(cls).values():
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if not inspect.isfunction(value):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(value))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source)):
            names.update(a for a in _assigned_on_self(node) if not a.startswith("_"))
    return names


def _assigned_on_self(node: ast.AST) -> list[str]:
    """The attribute names ``node`` assigns on ``self`` (``self.x = ...``, ``self.a, self.b = ...``)."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    flat = [t for target in targets for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
    return [t.attr for t in flat if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"]


def _member_doc(value: object) -> str | None:
    """The docstring of a callable or property as defined; None for data."""
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if isinstance(value, property) or inspect.isfunction(value):
        doc = getattr(value, "__doc__", None)
        return doc if isinstance(doc, str) else ""
    return None


def _public() -> list[tuple[str, object]]:
    return [(name, getattr(robustpool, name)) for name in robustpool.__all__]


def _class_members(cls: type) -> dict[str, tuple[type, object]]:
    """Public names of ``cls`` defined by robustpool: name -> (defining class, value)."""
    members: dict[str, tuple[type, object]] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is not None and _ours(owner):
            members[name] = (owner, vars(owner)[name])
    return members


def _undocumented() -> list[str]:
    missing: list[str] = []
    for name, obj in _public():
        if not isinstance(obj, type):
            if len(_words(inspect.getdoc(obj))) < MIN_CHARS:
                missing.append(name)
            continue
        if len(_words(_class_doc(obj))) < MIN_CHARS:
            missing.append(name)
        # Data attributes are documented by a field of the class docstring (or of the
        # robustpool base that defines them).
        ivars: dict[str, str] = {}
        for klass in reversed(obj.__mro__):
            if _ours(klass):
                ivars.update(_fields(_class_doc(klass), ("ivar", "var", "cvar")))
        data: set[str] = set()
        for attr, (owner, value) in _class_members(obj).items():
            doc = _member_doc(value)
            if doc is None:
                data.add(attr)
            elif len(_words(doc)) < MIN_CHARS:
                missing.append(f"{name}.{attr} (defined on {owner.__qualname__})")
        for klass in obj.__mro__:
            if _ours(klass):
                data |= _self_attributes(klass)
        for field in dataclasses.fields(obj) if dataclasses.is_dataclass(obj) else ():
            data.add(field.name)
        for attr in sorted(data):
            if len(ivars.get(attr, "")) < MIN_CHARS:
                missing.append(f"{name}.{attr} (data: needs ':ivar {attr}:' in the class docstring)")
    return missing


def _params(fn: object) -> list[str]:
    try:
        signature = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters if p not in ("self", "cls")]


def _undocumented_params() -> list[str]:
    missing: list[str] = []

    def check(label: str, fn: object, doc: str | None) -> None:
        documented = _fields(doc, ("param", "parameter", "arg", "argument", "key", "keyword"))
        missing.extend(f"{label}({p})" for p in _params(fn) if len(documented.get(p, "")) < MIN_CHARS)

    for name, obj in _public():
        if not isinstance(obj, type):
            check(name, obj, inspect.getdoc(obj))
            continue
        if name in CONSTRUCTED:
            check(name, vars(obj)["__init__"], _class_doc(obj))
        for attr, (_owner, value) in _class_members(obj).items():
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            if inspect.isfunction(value):
                check(f"{name}.{attr}", value, value.__doc__)
    return missing


def test_the_walk_reaches_the_api() -> None:
    # A walk that found nothing would pass for the wrong reason.
    pool = _class_members(robustpool.RobustPool)
    assert {"apply", "imap", "terminate", "processes", "supervisor_pid"} <= set(pool)
    assert "cancel" in _class_members(robustpool.RobustFuture)
    assert "result" not in _class_members(robustpool.RobustFuture)  # concurrent.futures.Future's own
    assert {"pid", "exitcode", "signal", "attempts"} <= _self_attributes(robustpool.WorkerLostError)
    assert _fields(":param a: one\n    two\n:returns: x", ("param",)) == {"a": "one two"}


def test_every_public_name_has_a_docstring() -> None:
    missing = _undocumented()
    header = f"{len(missing)} public name(s) without a docstring of {MIN_CHARS}+ characters:"
    assert not missing, "\n".join([header, *missing])


def test_every_parameter_is_documented() -> None:
    missing = _undocumented_params()
    header = f"{len(missing)} parameter(s) without a ':param name:' field of {MIN_CHARS}+ characters:"
    assert not missing, "\n".join([header, *missing])

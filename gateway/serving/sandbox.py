"""The sandbox site templates run in: documented variables and filters only, bounded work.

Marketers and designers edit templates, so a template is untrusted code. It runs in Jinja's
immutable sandbox (no ``_``-attributes, no mutation of the shared context), with the globals
cut down to ``range`` and the gettext functions, an allow-list of filters, loaders confined to
their folders, and caps on what one render may cost: sequence sizes, exponents, time and
output. ``inspect()`` refuses the known escapes *before* anything is executed, so a refused
edit never runs (a reload validated one hostile file by rendering it 82 times).
"""

from __future__ import annotations

import contextvars
import functools
import operator
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import FileSystemLoader, Template, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Filters a template may use (docs/templates.md lists them). Left out: those that pad or
# repeat text to a caller-given width (center, indent, format, wordwrap, replace: memory
# bombs), random and pprint (no use in a banner, and pprint prints internals).
ALLOWED_FILTERS = frozenset({
    "abs", "attr", "batch", "capitalize", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "groupby", "int", "items", "join",
    "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "reverse",
    "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum",
    "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize",
    "wordcount", "xmlattr",
})  # fmt: skip
# Names every template may read besides its documented variables (gettext comes from the
# i18n extension; loop, self, caller, varargs and kwargs are Jinja's own).
ALLOWED_GLOBALS = frozenset(
    {
        "range",
        "_",
        "gettext",
        "ngettext",
        "pgettext",
        "npgettext",
        "loop",
        "self",
        "caller",
        "varargs",
        "kwargs",
        "super",
    }
)
# String methods that grow text to a size the template picks; refused like private ones.
UNSAFE_METHODS = frozenset(
    {
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "format",
        "format_map",
        "replace",
        "join",
        "translate",
        "maketrans",
    }
)
TICK = "cg_tick"  # called on every loop iteration (see LoopTicks)

MAX_RANGE = 1000  # items of one range(); the shipped templates loop over purposes only
MAX_SEQUENCE = 100_000  # characters or items a `*` or `+` may produce
MAX_EXPONENT_BITS = 4096  # size of an integer `**` may produce
MAX_LOOP_DEPTH = 3
MAX_OUTPUT = 1_000_000  # characters of one rendered template
# CPU seconds of one render, compiling templates it extends included. CPU time of this thread,
# not wall time: on a loaded machine a wall-clock budget refused the shipped templates (and a
# start-up that refuses its own templates does not start). They take about a millisecond.
MAX_SECONDS = 2.0
MAX_SOURCE = 256 * 1024  # bytes of one template file

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "template_deadline", default=None
)


class TemplateLimitError(SecurityError):
    """A template went past one of the sandbox's bounds."""


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.thread_time() > deadline:
        raise TemplateLimitError(f"the template took more than {MAX_SECONDS} s of CPU to render")


def _tick() -> str:
    _check_deadline()
    return ""


def bounded_range(*args: int) -> range:
    """range() with at most MAX_RANGE items (Jinja's own sandbox allows 100,000)."""
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise TemplateLimitError(f"range() of more than {MAX_RANGE} items")
    return found


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _checked_mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        size = _size(seq)
        if size is not None and isinstance(count, int) and size * count > MAX_SEQUENCE:
            raise TemplateLimitError(f"a repetition longer than {MAX_SEQUENCE}")
    return operator.mul(left, right)


def _checked_add(left: Any, right: Any) -> Any:
    sizes = (_size(left), _size(right))
    if None not in sizes and sum(s for s in sizes if s is not None) > MAX_SEQUENCE:
        raise TemplateLimitError(f"a concatenation longer than {MAX_SEQUENCE}")
    return operator.add(left, right)


def _checked_pow(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        if right > 0 and max(abs(left), 2).bit_length() * right > MAX_EXPONENT_BITS:
            raise TemplateLimitError("an exponent too large")
    elif isinstance(right, int | float) and abs(right) > 1024:
        raise TemplateLimitError("an exponent too large")
    return operator.pow(left, right)


def _checked_mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        # "%999999999s" % x is a memory bomb; text formatting has filters and gettext.
        raise SecurityError("string formatting with % is not available in templates")
    return operator.mod(left, right)


def _checked_size(value: Any) -> Any:
    """The result of a `~` concatenation, refused past MAX_SEQUENCE (a chain of
    `{% set b = a ~ a %}` doubles a text per line)."""
    if len(value) > MAX_SEQUENCE:
        raise TemplateLimitError(f"a concatenation longer than {MAX_SEQUENCE}")
    return value


def _checked_join(
    join: Callable[..., str],
) -> Callable[..., str]:
    """The join filter, refusing a result past MAX_SEQUENCE ([text] * 1000 | join)."""

    @functools.wraps(join)  # keeps Jinja's pass_eval_context mark
    def checked(*args: Any, **kwargs: Any) -> str:
        joined = join(*args, **kwargs)
        if len(joined) > MAX_SEQUENCE:
            raise TemplateLimitError(f"a join longer than {MAX_SEQUENCE}")
        return joined

    return checked


class SizeCheckedConcat(CodeGenerator):
    """Compiles `a ~ b` so that its result goes through the sandbox's size check: Jinja
    joins concatenations in the template module itself, out of the environment's reach."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_size(")
        super().visit_Concat(node, frame)
        self.write(")")


class LoopTicks(Extension):
    """Puts ``{{ cg_tick() }}`` at the top of every for-loop body: the render's clock check.

    Loops whose bodies call nothing would otherwise never give the sandbox a chance to stop
    them (nested loops over a large range). A token filter is Jinja's documented hook.
    """

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        previous: Token | None = None
        in_for = False
        for token in stream:
            yield token
            if (
                previous is not None
                and previous.type == "block_begin"
                and token.type == "name"
                and token.value == "for"
            ):
                in_for = True
            elif in_for and token.type == "block_end":
                in_for = False
                line = token.lineno
                yield Token(line, "variable_begin", "{{")
                yield Token(line, "name", TICK)
                yield Token(line, "lparen", "(")
                yield Token(line, "rparen", ")")
                yield Token(line, "variable_end", "}}")
            previous = token


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the gateway's allow-lists and bounds."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = SizeCheckedConcat
    checked_size = staticmethod(_checked_size)

    def __init__(self, **options: Any) -> None:
        extensions = [*options.pop("extensions", []), LoopTicks]
        super().__init__(extensions=extensions, **options)
        # Only range and the i18n extension's `_` (gettext and friends are installed later);
        # cycler, joiner, lipsum and namespace lead to module globals and the builtins.
        kept = {k: v for k, v in self.globals.items() if k == "_"}
        self.globals.clear()
        self.globals.update(kept, range=bounded_range, **{TICK: _tick})
        self.filters = {k: v for k, v in self.filters.items() if k in ALLOWED_FILTERS}
        self.filters["join"] = _checked_join(self.filters["join"])
        self.binop_table = {
            **self.binop_table,
            "*": _checked_mul,
            "**": _checked_pow,
            "%": _checked_mod,
            "+": _checked_add,
        }

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in UNSAFE_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return None  # str.format is refused outright (is_safe_attribute), not wrapped

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _check_deadline()
        return super().call(__context, __obj, *args, **kwargs)


class ConfinedLoader(FileSystemLoader):
    """A FileSystemLoader that refuses files resolving outside its folder (symlinks)."""

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        roots = [os.path.realpath(p) for p in self.searchpath]
        if not any(real.startswith(root + os.sep) for root in roots):
            raise SecurityError(f"template {template!r} resolves outside its folder")
        if len(source) > MAX_SOURCE:
            raise SecurityError(f"template {template!r} is larger than {MAX_SOURCE} bytes")
        return source, filename, uptodate


def render(template: Template, context: Mapping[str, Any]) -> str:
    """Render within the time and output bounds; any failure is a TemplateError."""
    token = _deadline.set(time.thread_time() + MAX_SECONDS)
    try:
        parts: list[str] = []
        size = 0
        for part in template.generate(context):
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateLimitError(f"the template wrote more than {MAX_OUTPUT} characters")
            parts.append(part)
        return "".join(parts)
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateLimitError("the template recursed too deeply") from None
    except Exception as exc:  # e.g. 1/0 or int("x") in a template: the template's fault
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _deadline.reset(token)


def _stored_names(tree: nodes.Template) -> set[str]:
    names = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    names |= {m.name for m in tree.find_all(nodes.Macro)}
    for imp in tree.find_all(nodes.FromImport):
        names |= {n[1] if isinstance(n, tuple) else n for n in imp.names}
    names |= {i.target for i in tree.find_all(nodes.Import)}
    return names


def _loop_depth(node: nodes.Node, depth: int = 0) -> int:
    here = depth + 1 if isinstance(node, nodes.For) else depth
    return max([here, *(_loop_depth(child, here) for child in node.iter_child_nodes())])


def inspect(tree: nodes.Template, variables: Collection[str]) -> list[str]:
    """What in a parsed template the sandbox refuses, found without running it."""
    problems: list[str] = []
    allowed = set(variables) | ALLOWED_GLOBALS | {TICK} | _stored_names(tree)
    for node in tree.find_all(nodes.Getattr):
        if node.attr.startswith("_") or node.attr in UNSAFE_METHODS:
            problems.append(
                f"line {node.lineno}: attribute {node.attr!r} is not available in templates"
            )
    for item in tree.find_all(nodes.Getitem):
        key = item.arg
        if (
            isinstance(key, nodes.Const)
            and isinstance(key.value, str)
            and key.value.startswith("_")
        ):
            problems.append(f"line {item.lineno}: item {key.value!r} is not available in templates")
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in allowed:
            problems.append(
                f"line {name.lineno}: unknown variable {name.name!r} (templates "
                "see only the documented variables)"
            )
    for flt in tree.find_all(nodes.Filter):
        if flt.name not in ALLOWED_FILTERS:
            problems.append(f"line {flt.lineno}: filter {flt.name!r} is not available in templates")
        # attr("__class__"), map(attribute="__class__"), sort(attribute=…) and friends
        for arg in [*flt.args, *(kw.value for kw in flt.kwargs)]:
            if (
                isinstance(arg, nodes.Const)
                and isinstance(arg.value, str)
                and arg.value.startswith("_")
            ):
                problems.append(
                    f"line {flt.lineno}: attribute {arg.value!r} is not available in templates"
                )
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            problems.append(f"line {loop.lineno}: recursive loops are not available in templates")
    if _loop_depth(tree) > MAX_LOOP_DEPTH:
        problems.append(f"loops nested deeper than {MAX_LOOP_DEPTH}")
    return list(dict.fromkeys(problems))


def iter_problems(
    env: Environment, sources: Iterable[tuple[str, str, Collection[str]]]
) -> Iterator[tuple[str, str]]:
    """(name, problem) for each (name, source, variables) a template would be refused for."""
    for name, source, variables in sources:
        if len(source.encode("utf-8")) > MAX_SOURCE:
            yield name, f"larger than {MAX_SOURCE} bytes"
            continue
        for problem in inspect(env.parse(source, name), variables):
            yield name, problem

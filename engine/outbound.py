"""A namespace's Outbound Worker setting: which Worker receives its user Workers' fetches,
and the parameters that Worker finds in its environment.

Each parameter's value for an invocation comes from the dispatcher when it gives one,
else from the operator's template: literal text with `{worker}`, `{namespace}`,
`{request.url}`, `{request.host}` (the canonical host the egress policy judged: `127.1` is
`127.0.0.1`) and `{tag:NAME}` (`yes` when the user Worker has tag NAME, else empty); `{{` and
`}}` are literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .egress import canonical_hostname
from .errors import InvalidInput
from .validation import VAR_NAME, check_name, check_tag

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIXED_FIELDS = ("worker", "namespace", "request.url", "request.host")
MAX_PARAMETERS = 32


def check_template(template: str, parameter: str) -> str:
    if not isinstance(template, str):
        raise InvalidInput(f"outbound parameter {parameter}'s template must be text")
    for match in _PLACEHOLDER.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        field = match.group(1)
        if field is None:
            raise InvalidInput(f"outbound parameter {parameter}'s template has an unmatched {token!r}; write {token * 2} for a literal brace")
        if field in _FIXED_FIELDS:
            continue
        if field.startswith("tag:"):
            check_tag(field[4:])
            continue
        raise InvalidInput(
            f"outbound parameter {parameter}'s template uses {{{field}}}; known fields are "
            "{worker}, {namespace}, {request.url}, {request.host} and {tag:NAME}"
        )
    return template


@dataclass(frozen=True)
class OutboundParameter:
    name: str
    template: str | None = None  # None: only the dispatcher sets it

    def render(self, *, worker: str, namespace: str, url: str, tags: Iterable[str]) -> str:
        if self.template is None:
            return ""
        tag_set = set(tags)

        def value(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            field = match.group(1)
            if field == "worker":
                return worker
            if field == "namespace":
                return namespace
            if field == "request.url":
                return url
            if field == "request.host":
                return canonical_hostname(url)
            return "yes" if field[4:] in tag_set else ""

        return _PLACEHOLDER.sub(value, self.template)


@dataclass(frozen=True)
class OutboundSetting:
    service: str
    parameters: tuple[OutboundParameter, ...] = ()

    @classmethod
    def parse(
        cls, service: str, parameters: Iterable[str | tuple[str, str | None]] | Mapping[str, str | None] = ()
    ) -> "OutboundSetting":
        """`parameters`: names (set by the dispatcher only), (name, template) pairs, or a mapping."""
        check_name(service, "outbound service name")
        items = list(parameters.items()) if isinstance(parameters, Mapping) else list(parameters)
        checked: list[OutboundParameter] = []
        for item in items:
            name, template = (item, None) if isinstance(item, str) else item
            if not isinstance(name, str) or not VAR_NAME.match(name):
                raise InvalidInput(f"outbound parameter name {name!r} is not an environment variable name (letters, digits, underscore)")
            if any(p.name == name for p in checked):
                raise InvalidInput(f"outbound parameter {name} is listed twice")
            checked.append(OutboundParameter(name, None if template is None else check_template(template, name)))
        if len(checked) > MAX_PARAMETERS:
            raise InvalidInput(f"an Outbound Worker can have at most {MAX_PARAMETERS} parameters, not {len(checked)}")
        return cls(service, tuple(checked))

    def environment(
        self, given: Mapping[str, str], *, worker: str, namespace: str, url: str, tags: Iterable[str]
    ) -> dict[str, str]:
        """Each parameter's value: the dispatcher's if it gave one, else the template's."""
        values: dict[str, str] = {}
        for parameter in self.parameters:
            if parameter.name in given:
                values[parameter.name] = given[parameter.name]
            else:
                values[parameter.name] = parameter.render(worker=worker, namespace=namespace, url=url, tags=tags)
        return values

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "parameters": [{"name": p.name, "template": p.template} for p in self.parameters],
        }


def check_outbound_values(values: Mapping[str, str], setting: OutboundSetting | None) -> dict[str, str]:
    """A dispatcher's parameter values: names the setting declares, text values. Without an
    Outbound Worker there is nobody to receive them, and they are dropped."""
    if not values or setting is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput("outbound parameters must be an object of names and text values")
    known = {p.name for p in setting.parameters}
    checked: dict[str, str] = {}
    for name, value in values.items():
        if name not in known:
            raise InvalidInput(
                f"outbound parameter {name!r} is not declared by the namespace's Outbound Worker"
                + (f" (it declares {', '.join(sorted(known))})" if known else " (it declares none)")
            )
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInput(f"outbound parameter {name} must be text without NUL characters")
        checked[name] = value
    return checked

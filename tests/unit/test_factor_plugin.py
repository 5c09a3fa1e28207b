"""Issue 22's measure: adding a factor touches its module, its migration, its tests, the default
policy and the client, nothing else.

So no code outside a factor's own module switches on its name: the use cases, the HTTP layer,
the policy engine and storage read the registry (``service.factors.registry``) and the SPEC's
hooks and roles instead. A string constant equal to a factor's name, or quoting it inside a
larger string (an SQL fragment), is what switching on it takes in Python; docstrings and
comments are prose and do not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from service.factors import registry
from service.factors.spec import FactorSpec

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"

# Where a factor's name may appear besides its own module, with the reason each cannot go.
ALLOWED_ANYWHERE = ("service/storage/migrations/",)  # "its migration"
EXCEPTIONS = {
    # The partial unique indexes of migrations 0005 (one PIN per subject) and 0006 (one set of
    # recovery codes), mirrored in the table metadata the storage layer is built on: part of
    # those factors' migrations, in SQL, where no registry can reach.
    ("service/storage/tables.py", "knowledge"),
    ("service/storage/tables.py", "recovery_code"),
    # An example in the policy parser's error message ("e.g. [['totp']]"), not a switch.
    ("service/domain/policy_file.py", "totp"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the constants that are docstrings (prose, like comments)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def _uses(path: Path, name: str) -> list[int]:
    """Lines of ``path`` whose string constants name factor ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prose = _docstrings(tree)
    quoted = re.compile(rf"""['"]{re.escape(name)}['"]""")
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in prose
        and (node.value == name or quoted.search(node.value))
    )


def _offenders(name: str) -> list[str]:
    own = f"service/factors/{name}.py"
    found = []
    for path in sorted(SERVICE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == own or rel.startswith(ALLOWED_ANYWHERE) or (rel, name) in EXCEPTIONS:
            continue
        found += [f"{rel}:{line}" for line in _uses(path, name)]
    return found


@pytest.mark.parametrize("name", registry.NAMES)
def test_a_factor_is_named_only_in_its_own_module(name: str) -> None:
    """The use cases iterate over the registry; a branch on this factor's name outside its
    module would be one more file to touch for the next factor."""
    assert _offenders(name) == [], f"{name!r} is switched on outside its module"


def test_the_check_sees_a_switch_on_a_name(tmp_path: Path) -> None:
    """The scan finds what it is for: a constant, a quoted name in SQL; not prose."""
    source = tmp_path / "probe.py"
    source.write_text(
        '"""Mentions "sms" in prose."""\n'
        'if kind == "sms":\n    pass\n'
        "WHERE = \"type = 'sms'\"\n"
        "# a comment about 'sms'\n",
        encoding="utf-8",
    )
    assert _uses(source, "sms") == [2, 4]


def test_every_factor_module_is_one_plug_in() -> None:
    """Each registered factor is a module whose SPEC carries its behaviour: a verifier, and the
    enrolment and challenge hooks its declaration promises (FactorSpec checks it at import)."""
    for name, spec in registry.FACTORS.items():
        assert (SERVICE / "factors" / f"{name}.py").is_file(), name
        assert spec.verify is not None, name
        assert (spec.prepare is not None) == spec.enrollable, name
        assert (spec.issue_challenge is not None) == (spec.challenge is not None), name


def test_a_spec_without_its_hooks_fails_at_import() -> None:
    """A factor that forgot its verifier or enrolment fails when its module loads, not at the
    first proof (it would otherwise be a 500 in production)."""
    common = {"phone_bound": False, "proof_fields": {}, "amr": (), "replay": "", "stores": ""}
    with pytest.raises(ValueError, match="verify hook"):
        FactorSpec(name="toy", challenge=None, enrollable=False, **common)
    with pytest.raises(ValueError, match="prepare hook"):
        FactorSpec(name="toy", challenge=None, verify=lambda *a: None, **common)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="issue_challenge"):
        FactorSpec(
            name="toy",
            challenge="nonce",
            enrollable=False,
            verify=lambda *a: None,  # type: ignore[arg-type, return-value]
            **common,
        )

"""Settings: one frozen dataclass read from ``IDV_*`` environment variables and checked at start.

A bad value raises ``ConfigError`` naming the variable; the CLI prints that one line and exits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.domain.errors import ConfigError
from service.domain.retention import Retention, parse_retention

MAX_ASSERTION_TTL = 300  # API.md: exp at most 5 minutes after iat


def default_data_dir() -> Path:
    """Where the embedded default keeps its database and key file (XDG data home)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "idv"


def packaged_policy_file() -> Path:
    """The default policy: shipped inside the wheel, or ``policies/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (
        here / "policies" / "default.toml",
        here.parent / "policies" / "default.toml",
    ):
        if candidate.is_file():
            return candidate
    return here.parent / "policies" / "default.toml"


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"must be 1 or 0 (on/off), got {raw!r}")


ARGON2_IDLE = "idle"


def _argon2_nice(env: Mapping[str, str]) -> int | str:
    """``IDV_ARGON2_NICE``: ``idle`` (Linux SCHED_IDLE, the default) or a nice value 0-19."""
    raw = (env.get("IDV_ARGON2_NICE") or "").strip().lower()
    if raw in ("", ARGON2_IDLE):
        return ARGON2_IDLE
    if not raw.isdigit():
        raise ConfigError("IDV_ARGON2_NICE", f"must be idle or a nice value 0-19, got {raw!r}")
    return _int(env, "IDV_ARGON2_NICE", 10, 0, 19)


def _rate_limits(raw: str) -> tuple[tuple[str, str], ...]:
    """``IDV_RATE_LIMITS="client=12000/minute,sms_sends=3/10minutes"``: checked at start."""
    from service.ratelimit import RateLimits

    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        kind, sep, limit = item.partition("=")
        if not sep:
            raise ConfigError("IDV_RATE_LIMITS", f"{item!r} is not KIND=LIMIT")
        pairs.append((kind.strip(), limit.strip()))
    try:
        RateLimits(None, dict(pairs))
    except ValueError as exc:
        raise ConfigError("IDV_RATE_LIMITS", str(exc)) from None
    return tuple(pairs)


def _default_region(env: Mapping[str, str]) -> str | None:
    """``IDV_DEFAULT_REGION``: an ISO 3166 region code with a numbering plan (``CN``), or unset."""
    from service.domain.phone import is_region

    raw = (env.get("IDV_DEFAULT_REGION") or "").strip()
    if not raw:
        return None
    if not is_region(raw.upper()):
        raise ConfigError(
            "IDV_DEFAULT_REGION", f"must be an ISO 3166 region code such as CN, got {raw!r}"
        )
    return raw.upper()


def _crypto_profile(env: Mapping[str, str]) -> str:
    """``IDV_CRYPTO_PROFILE``: ``intl`` (default) or ``gm``; a profile whose library is not
    installed stops the start with one line (GB/T 39786 profile, API.md)."""
    from service.crypto import profile

    raw = (env.get("IDV_CRYPTO_PROFILE") or profile.INTL).strip().lower()
    if raw not in profile.PROFILES:
        raise ConfigError("IDV_CRYPTO_PROFILE", f"must be intl or gm, got {raw!r}")
    try:
        profile.require_library(raw)
    except profile.ProfileUnavailable as exc:
        raise ConfigError("IDV_CRYPTO_PROFILE", str(exc)) from None
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    data_dir: Path
    database_url: str
    key_file: Path
    keys_json: str | None = None
    redis_url: str | None = None
    policy_file: Path = field(default_factory=packaged_policy_file)
    sms_sender: str | None = None
    issuer: str = "idv"
    assertion_ttl: int = MAX_ASSERTION_TTL
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    argon2_concurrency: int = 1
    argon2_nice: int | str = ARGON2_IDLE  # or a nice value 0-19
    argon2_duty: int = 50  # percent of the time each argon2 thread may hash (Argon2Gate)
    log_level: str = "INFO"
    trust_proxy: bool = False
    pin_threads: bool = True
    fast_proofs: bool = True  # the proof route's WSGI fast path (service.http.fast)
    client_timeout: int = 10
    rate_limits: tuple[tuple[str, str], ...] = ()
    carrier_url: str | None = None
    carrier_token_url: str | None = None
    carrier_client_id: str | None = None
    carrier_client_secret: str | None = None
    default_region: str | None = None  # ISO 3166, e.g. "CN": national phone numbers allowed
    crypto_profile: str = "intl"  # IDV_CRYPTO_PROFILE: intl | gm (service.crypto.profile)
    # IDV_RETENTION: how long each kind of record stays (service.domain.retention, issue 23).
    retention: Retention = field(default_factory=Retention)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded default."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every ``IDV_*`` variable; raise ``ConfigError`` on the first bad one."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("IDV_DATA_DIR") or default_data_dir())
        database_url = env.get("IDV_DATABASE_URL") or f"sqlite:///{data_dir / 'idv.db'}"
        if not database_url.startswith(("sqlite:", "sqlite+pysqlite:", "postgresql")):
            raise ConfigError(
                "IDV_DATABASE_URL",
                "must be a sqlite:/// or postgresql+psycopg:// SQLAlchemy URL",
            )
        if database_url.startswith("sqlite") and database_url.split(":///", 1)[-1] in (
            "",
            database_url,
        ):
            raise ConfigError(
                "IDV_DATABASE_URL", "a sqlite URL needs a file: sqlite:////path/idv.db"
            )
        if database_url.startswith("postgresql:") or database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
        redis_url = env.get("IDV_REDIS_URL") or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("IDV_REDIS_URL", "must start with redis:// or rediss://")
        policy_raw = env.get("IDV_POLICY_FILE")
        policy_file = Path(policy_raw) if policy_raw else packaged_policy_file()
        if not policy_file.is_file():
            raise ConfigError("IDV_POLICY_FILE", f"no such file: {policy_file}")
        sms = env.get("IDV_SMS_SENDER") or None
        if sms and not (sms.startswith("file:") or sms.startswith("webhook:http")):
            raise ConfigError("IDV_SMS_SENDER", "must be file:PATH or webhook:URL (http/https)")
        issuer = env.get("IDV_ISSUER") or "idv"
        level = (env.get("IDV_LOG_LEVEL") or "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("IDV_LOG_LEVEL", "must be DEBUG, INFO, WARNING or ERROR")
        key_file = Path(env.get("IDV_KEY_FILE") or data_dir / "keys.json")
        rate_limits = _rate_limits(env.get("IDV_RATE_LIMITS") or "")
        carrier = {
            name: env.get(f"IDV_CARRIER_{name.upper()}") or None
            for name in ("url", "token_url", "client_id", "client_secret")
        }
        if any(carrier.values()) and not all(carrier.values()):
            missing = [f"IDV_CARRIER_{k.upper()}" for k, v in carrier.items() if not v]
            raise ConfigError(
                missing[0],
                "a carrier provider needs IDV_CARRIER_URL, "
                "IDV_CARRIER_TOKEN_URL, IDV_CARRIER_CLIENT_ID and _CLIENT_SECRET",
            )
        for name in ("url", "token_url"):
            value = carrier[name]
            if value and not value.startswith(("https://", "http://")):
                raise ConfigError(f"IDV_CARRIER_{name.upper()}", "must be an http(s) URL")
        crypto_profile = _crypto_profile(env)
        return cls(
            default_region=_default_region(env),
            data_dir=data_dir,
            database_url=database_url,
            key_file=key_file,
            keys_json=env.get("IDV_KEYS") or None,
            redis_url=redis_url,
            policy_file=policy_file,
            sms_sender=sms,
            issuer=issuer,
            assertion_ttl=_int(env, "IDV_ASSERTION_TTL", MAX_ASSERTION_TTL, 30, MAX_ASSERTION_TTL),
            # OWASP password storage cheat sheet: argon2id, 19 MiB, t=2, p=1 at least.
            argon2_time_cost=_int(env, "IDV_ARGON2_TIME_COST", 2, 2, 20),
            argon2_memory_kib=_int(env, "IDV_ARGON2_MEMORY_KIB", 19456, 19456, 4 * 1024 * 1024),
            argon2_parallelism=_int(env, "IDV_ARGON2_PARALLELISM", 1, 1, 16),
            # argon2 releases the GIL: half the cores hash, the rest serve everything else.
            argon2_concurrency=_int(
                env, "IDV_ARGON2_CONCURRENCY", max(1, (os.cpu_count() or 2) // 2), 1, 64
            ),
            # A PIN flood must not starve TOTP and device proofs (context.Argon2Gate).
            argon2_nice=_argon2_nice(env),
            argon2_duty=_int(env, "IDV_ARGON2_DUTY", 50, 5, 100),
            log_level=level,
            trust_proxy=(env.get("IDV_TRUST_PROXY") or "").lower() in {"1", "true", "yes"},
            pin_threads=_switch(env, "IDV_PIN_THREADS", True),
            fast_proofs=_switch(env, "IDV_FAST_PROOFS", True),
            # A connection silent this long mid-request is dropped (http.server).
            client_timeout=_int(env, "IDV_CLIENT_TIMEOUT", 10, 1, 300),
            rate_limits=rate_limits,
            carrier_url=carrier["url"],
            carrier_token_url=carrier["token_url"],
            carrier_client_id=carrier["client_id"],
            carrier_client_secret=carrier["client_secret"],
            crypto_profile=crypto_profile,
            retention=parse_retention(env.get("IDV_RETENTION")),
        )

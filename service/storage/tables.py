"""Every table of idv, one schema for SQLite and PostgreSQL (SQLAlchemy Core).

Personal data (the phone) lives only in ``subjects``, encrypted, with a keyed hash beside it
for lookups (PIPL art. 51). Replay protection is done by unique constraints, never by a
read-then-write (RFC 6238 §5.2, ASVS 6.5.1).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)
# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

clients = Table(
    "clients",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Column("revoked_at", TS),
    Column("last_used_at", TS),
    # The tenant's name in authenticator apps (otpauth issuer, e.g. 速借); NULL: IDV_ISSUER.
    Column("issuer", String(64)),
    # ISO 3166 regions the tenant may text (``CN,HK``); NULL: any, throttled per calling code.
    Column("sms_regions", String(200)),
    # The tenant's WebAuthn relying party (idv clients webauthn): its RP id and the JSON list of
    # origins its ceremonies may come from. NULL: the tenant is never offered passkeys.
    Column("webauthn_rp_id", String(253)),
    Column("webauthn_origins", Text),
)

subjects = Table(
    "subjects",
    metadata,
    Column("pk", BigId, primary_key=True, autoincrement=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("phone_ct", Text),
    Column("phone_hash", String(64)),
    Column("phone_set_at", TS),
    Column("locked_until", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    # The WebAuthn user.id of the subject's passkeys: random, never the subject id.
    Column("webauthn_handle", String(64)),
    UniqueConstraint("client_id", "subject_id", name="uq_subjects_client_subject"),
    Index("ix_subjects_phone_hash", "phone_hash"),
)

factors = Table(
    "factors",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("subject_pk", BigId, ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("secret_ct", Text, nullable=False),
    Column("alg", String(16)),
    Column("label", String(200)),
    Column("created_at", TS, nullable=False),
    Column("activated_at", TS),
    # A passkey's signature counter (WebAuthn §6.1.1), advanced by a compare-and-set.
    Column("sign_count", BigInteger),
    Index("ix_factors_subject", "subject_pk", "type"),
    # One chosen secret per subject: racing PIN enrolments cannot both land.
    Index(
        "uq_factors_one_knowledge",
        "subject_pk",
        unique=True,
        sqlite_where=text("type = 'knowledge'"),
        postgresql_where=text("type = 'knowledge'"),
    ),
    # One recovery-code set per subject: a new set voids the old, and racing set-ups cannot
    # leave two sets alive.
    Index(
        "uq_factors_one_recovery_code",
        "subject_pk",
        unique=True,
        sqlite_where=text("type = 'recovery_code'"),
        postgresql_where=text("type = 'recovery_code'"),
    ),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    # NIST SP 800-63B-4 look-up secrets: each code only as a keyed hash (HMAC-SHA256 under a
    # key of the key ring, bound to its set), spent by one conditional UPDATE of used_at.
    Column("factor_id", String(40), ForeignKey("factors.id", ondelete="CASCADE"), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("used_at", TS),
    UniqueConstraint("factor_id", "digest", name="uq_recovery_codes_factor_digest"),
)

totp_used_steps = Table(
    "totp_used_steps",
    metadata,
    Column("factor_id", String(40), ForeignKey("factors.id", ondelete="CASCADE"), nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("used_at", TS, nullable=False),
    # RFC 6238 §5.2: a code is accepted once; the constraint is the atomic guard.
    UniqueConstraint("factor_id", "step", name="uq_totp_used_steps_factor_step"),
    Index("ix_totp_used_steps_used_at", "used_at"),
)

verifications = Table(
    "verifications",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("subject_pk", BigId, ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    Column("action", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("options", Text, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("satisfied", Text, nullable=False, default="[]"),
    Column("failures", Integer, nullable=False, default=0),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("completed_at", TS),
    Column("held_until", TS),
    # A delayed recovery (recover_delayed): when the wait ends; the completion window then
    # runs to expires_at. At most one waiting verification per subject (API.md, Recovery).
    Column("ready_at", TS),
    # The method of the attestation this verification accepted (face, eid, id_document,
    # in_person): a later proof that completes an option checks that the method counts there.
    Column("attested_method", String(16)),
    # RFC 8176 values accepted proofs reported beyond their factor's own (a passkey's hwk or
    # swk, and user), space-separated.
    Column("amr", String(64)),
    Index("ix_verifications_subject", "subject_pk"),
    Index("ix_verifications_expires_at", "expires_at"),  # the retention purge (0012)
    Index(
        "uq_verifications_one_waiting",
        "subject_pk",
        unique=True,
        sqlite_where=text("status = 'waiting'"),
        postgresql_where=text("status = 'waiting'"),
    ),
)

erased_phones = Table(
    "erased_phones",
    metadata,
    # Issue 19, hole 2: a subject re-created with a phone its tenant erased less than 30 days
    # ago gets no onboarding exemption. Only the phone's keyed hash, the tenant and the time
    # (PIPL art. 6, minimum necessary); rows older than 30 days are ignored and deleted.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("client_id", String(40), nullable=False),
    Column("phone_hash", String(64), nullable=False),
    Column("erased_at", TS, nullable=False),
    Index("ix_erased_phones_phone", "client_id", "phone_hash"),
    Index("ix_erased_phones_erased_at", "erased_at"),
)

challenges = Table(
    "challenges",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "verification_id",
        String(40),
        ForeignKey("verifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("factor", String(16), nullable=False),
    Column("digest", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("used_at", TS),
    Index("ix_challenges_verification", "verification_id", "factor"),
    Index("ix_challenges_expires_at", "expires_at"),
)

used_assertions = Table(
    "used_assertions",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("used_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Index("ix_used_assertions_expires_at", "expires_at"),
)

attestation_keys = Table(
    "attestation_keys",
    metadata,
    # A tenant's public keys for attested proofing (``idv clients attestation-key``); the
    # primary key's prefix answers "can this tenant attest?" in the decision snapshot.
    Column("client_id", String(40), ForeignKey("clients.id"), primary_key=True),
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("created_at", TS, nullable=False),
)

attestation_jtis = Table(
    "attestation_jtis",
    metadata,
    # An attestation's jti is accepted once per tenant: the primary key is the atomic guard.
    Column("client_id", String(40), primary_key=True),
    Column("jti", String(128), primary_key=True),
    Column("used_at", TS, nullable=False),
    Index("ix_attestation_jtis_used_at", "used_at"),
)

subject_events = Table(
    "subject_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_pk", BigId, ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", TS, nullable=False),
    Index("ix_subject_events_subject", "subject_pk", "type"),
)

# What carrier_events.type holds (API.md, carrier signals).
CARRIER_EVENT_TYPES = ("sim_swap", "sim_lost", "sim_unblocked", "number_recycled")

carrier_events = Table(
    "carrier_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("phone_hash", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("received_at", TS, nullable=False),
    Column("client_id", String(40)),
    UniqueConstraint("phone_hash", "type", "occurred_at", name="uq_carrier_events_event"),
    # The retention purge; not occurred_at (0012_retention says why).
    Index("ix_carrier_events_received", "received_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("client_id", String(40)),
    Column("operator", String(128)),
    Column("event", String(64), nullable=False),
    Column("subject_ref", String(64)),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False, default="{}"),
    Column("ip", String(64)),
    # A chain per writer (service/storage/audit.py): the unique constraint means a chain
    # can never fork, and its index finds a writer's last entry.
    Column("writer", String(40), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
    # Now and then an entry vouches for the other chains' heads (sealed by its hash): a JSON
    # list of [writer, seq, hash]; NULL on most entries (migration 0010).
    Column("anchors", Text),
    UniqueConstraint("writer", "seq", name="uq_audit_log_writer_seq"),
    Index("ix_audit_log_at", "at"),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    # Each writer's last entry, sealed, updated with every append: tail deletions show.
    Column("writer", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
    # When the head last moved (not sealed: it only picks the heads a writer anchors).
    Column("at", TS),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    # Where the kept part of a pruned chain starts (issue 23): its last pruned entry's seq and
    # hash, sealed like a head, so the first kept entry must link to exactly that hash.
    Column("writer", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
    Column("at", TS, nullable=False),
)

webhooks = Table(
    "webhooks",
    metadata,
    # One endpoint per tenant; the signing secret is encrypted like every other secret.
    Column("client_id", String(40), ForeignKey("clients.id"), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret_ct", Text, nullable=False),
    Column("created_at", TS, nullable=False),
)

webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    # Durable outbox: written in the transaction of the event, delivered after commit with
    # retries and exponential back-off, so a tenant that is down loses nothing.
    Column("id", String(40), primary_key=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("delivered_at", TS),
    Column("last_error", String(200)),
    Index("ix_webhook_outbox_due", "delivered_at", "next_attempt_at"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # API.md "Conveniences": a POST's Idempotency-Key, claimed once per client by the unique
    # constraint (two racing requests: one runs, the other gets 409), then its first answer.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("key_hash", String(64), nullable=False),  # keyed hash of the key, never the key
    Column("request_hash", String(64), nullable=False),  # keyed hash of method, path, body
    Column("token", String(32), nullable=False),  # which request holds a running claim
    Column("status", String(8), nullable=False),  # running | done
    Column("response_ct", Text),  # status and body, encrypted like other secrets
    # Erased with the subject the route names (PIPL art. 47).
    Column("subject_pk", BigId, ForeignKey("subjects.pk", ondelete="CASCADE")),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("client_id", "key_hash", name="uq_idempotency_keys_client_key"),
    Index("ix_idempotency_keys_created", "created_at"),  # the `idempotency` retention purge
    Index("ix_idempotency_keys_subject", "subject_pk"),
)

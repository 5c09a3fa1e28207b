"""Data-key rotation: add a key, re-encrypt stored secrets in batches (PIPL art. 51).

Old ciphertexts keep decrypting until re-encrypted: every value names its key id. Keyed
lookups (phone hashes) are rewritten under the running crypto profile the same way.
"""

from __future__ import annotations

from sqlalchemy import Table, select, update

from service.context import ServiceContext
from service.crypto.keyring import KeyRing
from service.storage import replay
from service.storage.idempotency import answer_context
from service.storage.tables import carrier_events, factors, idempotency_keys, subjects, webhooks
from service.usecases.subjects import phone_context

BATCH = 200


def _targets() -> list[tuple[Table, str, str, object]]:
    """(table, key column, ciphertext column, context builder) of every encrypted value."""
    return [
        (subjects, "pk", "phone_ct", lambda r: f"phone:{r.client_id}:{r.subject_id}"),
        (factors, "id", "secret_ct", lambda r: f"factor:{r.id}"),
        (webhooks, "client_id", "secret_ct", lambda r: f"webhook:{r.client_id}"),
        (idempotency_keys, "id", "response_ct", lambda r: answer_context(r.client_id, r.key_hash)),
    ]


def reencrypt(ctx: ServiceContext, ring: KeyRing) -> int:
    """Re-encrypt every value not under ``ring``'s active data key, ``BATCH`` rows per
    transaction; returns how many values were rewritten. Safe to re-run after an interruption."""
    done = 0
    for table, key_col, ct_col, context_of in _targets():
        key = table.c[key_col]
        ct = table.c[ct_col]
        prefix = f"v1:{ring.active_data_kid}:"
        while True:
            with ctx.engine.begin() as conn:
                rows = conn.execute(
                    select(table).where(ct.is_not(None), ~ct.startswith(prefix)).limit(BATCH)
                ).all()
                for row in rows:
                    context = context_of(row)  # type: ignore[operator]
                    plain = ring.decrypt(getattr(row, ct_col), context)
                    conn.execute(
                        update(table)
                        .where(key == getattr(row, key_col))
                        .values({ct_col: ring.encrypt(plain, context)})
                    )
            done += len(rows)
            if len(rows) < BATCH:
                break
    return done


def rewrite_lookups(ctx: ServiceContext, ring: KeyRing) -> int:
    """Rewrite every subject's phone hash under ``ring``'s profile, ``BATCH`` subjects per
    transaction; returns how many changed. The carrier events recorded under a subject's old
    hash are copied under the new one (they hold no phone to recompute from), so a SIM swap
    reported before the switch still holds the subject's sensitive actions (T1). Safe to
    re-run; run it once every instance runs the new profile."""
    done, last_pk = 0, 0
    while True:
        with ctx.engine.begin() as conn:
            rows = conn.execute(
                select(subjects)
                .where(subjects.c.pk > last_pk, subjects.c.phone_ct.is_not(None))
                .order_by(subjects.c.pk)
                .limit(BATCH)
            ).all()
            for row in rows:
                phone = ring.decrypt(row.phone_ct, phone_context(row.client_id, row.subject_id))
                new_hash = ring.lookup_hash("phone", phone)
                if row.phone_hash == new_hash:
                    continue
                events = conn.execute(
                    select(carrier_events).where(carrier_events.c.phone_hash == row.phone_hash)
                ).all()
                for event in events:
                    replay.insert_once(
                        conn,
                        carrier_events,
                        phone_hash=new_hash,
                        type=event.type,
                        occurred_at=event.occurred_at,
                        received_at=event.received_at,
                        client_id=event.client_id,
                    )
                conn.execute(
                    update(subjects).where(subjects.c.pk == row.pk).values(phone_hash=new_hash)
                )
                done += 1
        if rows:
            last_pk = rows[-1].pk
        if len(rows) < BATCH:
            return done

"""Data-key rotation: add a key, re-encrypt stored secrets in batches (PIPL art. 51).

Old ciphertexts keep decrypting until re-encrypted: every value names its key id.
"""

from __future__ import annotations

from sqlalchemy import Table, select, update

from service.context import ServiceContext
from service.crypto.keyring import KeyRing
from service.storage.idempotency import answer_context
from service.storage.tables import factors, idempotency_keys, subjects, webhooks

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

"""Carrier signals pulled from the network operator: SIM changes (T1) and recycled numbers (T2).

``provider`` holds the provider-neutral facts and interface (pure), ``camara`` the GSMA Open
Gateway CAMARA client, ``simulator`` a CAMARA server for tests and demos.
"""

from service.carrier.provider import (
    CarrierProvider,
    NoCarrier,
    Reason,
    RecycleFact,
    RecycleStatus,
    SimChangeFact,
    SwapStatus,
)

__all__ = [
    "CarrierProvider",
    "NoCarrier",
    "Reason",
    "RecycleFact",
    "RecycleStatus",
    "SimChangeFact",
    "SwapStatus",
]

"""Python client of idv: ``IdvClient`` for the HTTP API, ``AssertionVerifier`` for the relying
party, and one exception class per error code of the contract."""

from idv_client.client import IdvClient
from idv_client.errors import (
    AssertionInvalid,
    FactorNotAllowed,
    Forbidden,
    IdvError,
    InvalidCode,
    InvalidRequest,
    NotFound,
    NotPending,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    StepUpRequired,
    TransportError,
    Unauthorized,
    UnknownAction,
    WeakSecret,
)
from idv_client.models import (
    CarrierEventResult,
    Challenge,
    ClientInfo,
    EnrolledFactor,
    Factor,
    FactorStatus,
    ProofResult,
    Subject,
    Verification,
)
from idv_client.verifier import AssertionVerifier, MemoryReplayStore, RedisReplayStore

__all__ = [
    "AssertionInvalid",
    "AssertionVerifier",
    "CarrierEventResult",
    "Challenge",
    "ClientInfo",
    "EnrolledFactor",
    "Factor",
    "FactorNotAllowed",
    "FactorStatus",
    "Forbidden",
    "IdvClient",
    "IdvError",
    "InvalidCode",
    "InvalidRequest",
    "MemoryReplayStore",
    "NotFound",
    "NotPending",
    "PayloadTooLarge",
    "ProofResult",
    "RateLimited",
    "RedisReplayStore",
    "ServerError",
    "StepUpRequired",
    "Subject",
    "TransportError",
    "Unauthorized",
    "UnknownAction",
    "Verification",
    "WeakSecret",
]
__version__ = "0.1.0"

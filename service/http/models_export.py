"""The answer of ``GET /v1/subjects/{subject_id}/export`` (PIPL art. 45; issue 23)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ExportPhone(BaseModel):
    masked: str | None = Field(description="e.g. +86 138****8000; null when voided")
    set_at: str | None


class ExportFactor(BaseModel):
    factor_id: str
    type: str
    status: str
    label: str | None = None
    created_at: str
    last_used_at: str | None = Field(description="the last accepted proof of this type")


class ExportVerification(BaseModel):
    verification_id: str
    action: str
    status: str
    created_at: str
    completed_at: str | None
    reasons: list[str]


class ExportCarrierEvent(BaseModel):
    type: str
    occurred_at: str
    received_at: str


class ExportAuditEntry(BaseModel):
    at: str
    event: str
    outcome: str
    detail: dict[str, Any]
    network: str | None = Field(description="the client's address truncated to /24 or /48")
    by_operator: bool = Field(description="the support desk acted (its operator is not named)")


class SubjectExport(BaseModel):
    subject_id: str
    exported_at: str
    created_at: str
    phone: ExportPhone
    factors: list[ExportFactor]
    verifications: list[ExportVerification] = Field(description="those not yet purged")
    carrier_events: list[ExportCarrierEvent] = Field(description="held for the subject's phone")
    audit: list[ExportAuditEntry] = Field(description="the latest 5,000, oldest first")
    audit_entries: int = Field(description="how many audit entries are about the subject")
    retention: dict[str, str] = Field(description="IDV_RETENTION as in force, per kind")

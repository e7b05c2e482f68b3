"""Database rows to the plain dicts the stores return (JSON columns parsed, booleans as bool)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def model_dict(row: Mapping[str, Any]) -> dict:
    return {"id": row["id"], "source": row["source"], "path": row["path"], "sha256": row["sha256"],
            "created_at": row["created_at"], "info": json.loads(row["info"]), "size": row["size"],
            "active": bool(row["active"])}


def job_dict(row: Mapping[str, Any]) -> dict:
    return {"id": row["id"], "seq": row["seq"], "status": row["status"], "config": json.loads(row["config"]),
            "progress": json.loads(row["progress"]), "history": json.loads(row["history"]),
            "created_at": row["created_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
            "error": row["error"], "model_id": row["model_id"], "activated": bool(row["activated"]),
            "activation_reason": row["activation_reason"], "attempt": row["attempt"],
            "max_attempts": row["max_attempts"], "lease_owner": row["lease_owner"],
            "lease_expires_at": row["lease_expires_at"], "worker_host": row["worker_host"],
            "worker_pid": row["worker_pid"], "cancel_requested": bool(row["cancel_requested"])}

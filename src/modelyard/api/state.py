"""What an app instance owns: settings, the store, the authenticator, its metrics."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelyard.config import Settings
from modelyard.monitoring.metrics import HttpMetrics
from modelyard.services.identity import Authenticator


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    authenticator: Authenticator
    metrics: HttpMetrics

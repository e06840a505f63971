"""Names the serving stack is found by: the Ray namespace, the detached actors next to an
application, its deployments, and the import path Serve builds it from. Defined once."""

from __future__ import annotations

NAMESPACE = "cls-ray"

GENERATOR = "generator"
RETRIEVER = "retriever"
SCORER = "scorer"
INGRESS = "ingress"

# Serve's application builder (a string: Serve imports it where the application runs).
APP_IMPORT_PATH = "actors.serve.app:app_from_args"


def buffer_actor_name(app_name: str) -> str:
    return f"{app_name}-replay-buffer"


def registry_actor_name(app_name: str) -> str:
    return f"{app_name}-model-registry"


def scheduler_actor_name(app_name: str) -> str:
    return f"{app_name}-sleep-scheduler"

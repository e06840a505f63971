"""Tasks: the user's data (documents, questions with reference answers, an answer check) behind
one interface, with the built-in world as one task among others."""

from __future__ import annotations

from cls_ray.task.base import QA, SPLITS, Split, Task, TaskError
from cls_ray.task.export import export_task
from cls_ray.task.files import FilesTask
from cls_ray.task.world_task import WorldTask

__all__ = ["QA", "SPLITS", "FilesTask", "Split", "Task", "TaskError", "WorldTask", "export_task"]

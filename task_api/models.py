"""Every table, imported together so relationships resolve whichever feature loads first."""

from task_api.tasks.models import Task, TaskCount, TaskPriority, TaskStatus
from task_api.users.models import User

__all__ = ["Task", "TaskCount", "TaskPriority", "TaskStatus", "User"]

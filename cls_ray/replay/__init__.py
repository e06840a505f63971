"""The replay buffer: finished sessions, durable, tagged with the model version."""

from cls_ray.replay.buffer import ReplayBuffer

__all__ = ["ReplayBuffer"]

"""twinsim: a simulation-first digital twin for robot-assisted vertebroplasty."""

__version__ = "0.1.0"

from twinsim.envs import register_envs as _register_envs  # noqa: E402 (gymnasium ids available after `import twinsim`)

_register_envs()

"""Gymnasium environments on the simulated room, registered on ``import twinsim``.

``gymnasium.make("twinsim/NeedleGuideAlign-v0")`` and ``gymnasium.make("twinsim/ViewSelection-v0")``;
keyword arguments (``scenario=``, ``level=``, ...) go to the environment. Observations are what
the system senses (tracker, joints, X-rays, clicks); rewards may use the simulation's truth, as
evaluation code does. See each module's docstring.
"""

from __future__ import annotations

ENVS = {
    "twinsim/NeedleGuideAlign-v0": "twinsim.envs.needle_guide_align:NeedleGuideAlignEnv",
    "twinsim/ViewSelection-v0": "twinsim.envs.view_selection:ViewSelectionEnv",
}


def register_envs() -> None:
    from gymnasium.envs.registration import register, registry

    for env_id, entry in ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry, disable_env_checker=False)

"""``waddington/Design-v0``: Gymnasium's checker, RLlib's action-mask layout, the telescoping reward."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest


@pytest.fixture(scope="module")
def problems():
    """Two targets (two perturbations' held-out cells) over the seen library of a tiny synthetic dataset."""
    import envs
    from experiments.design.env_problem import ObjectiveProblem
    from experiments.design.library import resolve_library
    from experiments.design.objective import DesignObjective, ForwardModel
    from experiments.prediction.predict import select_start_rows

    adata = envs.make_synthetic_perturbation_data(n_perturbations=4, n_control_cells=160,
                                                  n_cells_per_perturbation=60, n_genes=40, seed=1)
    ds = envs.prepare_dataset(adata, perturbation_key="perturbation", control_value="control", n_latent=4,
                              n_top_genes=40, max_pair_cells=160, seed=0)
    model = ForwardModel(ds, {}, select_start_rows(ds, n_cells=64))
    library = resolve_library(ds, "seen")
    out = []
    for name in library[:2]:
        objective = DesignObjective(model, target_latent=ds.latent[ds.cell_indices(name, "test")], effort=0.05)
        out.append(ObjectiveProblem(objective, library))
    return out


def test_check_env_and_registration(problems):
    from gymnasium.utils.env_checker import check_env

    from envs.design_env import DESIGN_ENV_ID, DesignEnv

    env = DesignEnv(problems, max_size=2)
    check_env(env, skip_render_check=True)
    made = gym.make(DESIGN_ENV_ID, problems=problems, max_size=2)
    assert isinstance(made.unwrapped, DesignEnv)
    n = len(problems[0].library)
    assert env.action_space == gym.spaces.Discrete(n + 1)
    assert set(env.observation_space.spaces) == {"observations", "action_mask"}  # RLlib's masking layout
    assert env.observation_space["action_mask"].shape == (n + 1,)


def test_reward_telescopes_to_the_objectives_decrease_and_masks_members(problems):
    from envs.design_env import DesignEnv

    env = DesignEnv(problems, max_size=2)
    obs, info = env.reset(seed=0, options={"problem": 0})
    objective = problems[0].objective
    start = objective.baseline().objective
    assert info["set"] == () and obs["action_mask"].tolist() == [1.0] * len(obs["action_mask"])
    obs, r1, done, truncated, info = env.step(0)
    assert not done and not truncated and obs["action_mask"][0] == 0.0
    with pytest.raises(ValueError, match="masked out"):
        env.step(0)  # a member twice
    obs, r2, done, _, info = env.step(1)
    assert done  # max_size reached
    final = objective.score([info["set"]])[0]
    assert r1 + r2 == pytest.approx(start - final.objective)  # decrease of distance, minus effort per member
    assert info["objective"] == pytest.approx(final.objective)
    assert env.observation_space.contains(obs)
    # stop: 0 reward, the episode ends with the set as it is
    env.reset(seed=1, options={"problem": 1})
    obs, reward, done, _, info = env.step(len(problems[1].library))
    assert done and reward == 0.0 and info["set"] == ()
    np.testing.assert_allclose(obs["observations"][: env.n_latent],
                               problems[1].target_mean - problems[1].predicted_mean([]), atol=1e-5)

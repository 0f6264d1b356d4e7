"""The oracle's return on a run's env: what a trained policy's return is read against."""

from __future__ import annotations

from helpers import tiny_dataset

from experiments.training.oracle_return import oracle_return


def test_oracle_return_is_positive_and_beats_doing_nothing():
    from envs.cell_state_env import CellStateEnv
    from envs.controllers import rollout_returns, zero_action

    dataset = tiny_dataset()
    oracle = oracle_return(dataset, episodes=40)
    env = CellStateEnv(dataset)
    nothing = rollout_returns(env, zero_action(env), episodes=40, seed=0)[0].mean()
    assert oracle > 0.5 and oracle > nothing + 0.5, (oracle, nothing)
    # the dynamics options are those of the run's env: a weaker push reaches less
    assert oracle_return(dataset, {"action_scale": 0.05}, episodes=40) < oracle


def test_policy_return_reads_a_mean_action_on_the_runs_env():
    import numpy as np

    from experiments.training.oracle_return import policy_return

    dataset = tiny_dataset()
    d = dataset.n_latent

    def zeros(obs):
        return np.zeros((len(obs), d))

    guide = policy_return(dataset, zeros, episodes=40)
    nothing = policy_return(dataset, zeros, {"guided": False}, episodes=40)
    # guided, a zero action is the guide's push toward the hint; plain, it is the drift alone
    assert guide > nothing + 0.1, (guide, nothing)
    assert guide < oracle_return(dataset, episodes=40)

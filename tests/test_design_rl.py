"""The RL designer: a masked, feature-scored policy trained TRPO -> PPO on the design env, then used at query time.

Brief real trainings (RLlib, local sampling): on the planted world (``experiments.design.planted``)
the trained policy must beat a random one on targets it never saw, the TRPO -> PPO handoff must be
exact, and ``waddington design --designer rl`` must train, write its designer, and reuse it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.test_design import _design, _one_error, tiny  # noqa: F401  (the module fixture)


def test_module_masks_members_already_chosen_and_scores_by_features():
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from algorithms.member_scoring_module import MemberScoringTorchRLModule
    from envs.design_env import design_spaces

    features = np.random.default_rng(0).standard_normal((6, 3))
    obs_space, act_space = design_spaces(6, 4)
    module = RLModuleSpec(module_class=MemberScoringTorchRLModule, observation_space=obs_space, action_space=act_space,
                          model_config={"member_features": features.tolist(), "hidden": 8}).build()
    obs = {"observations": torch.zeros((2, obs_space["observations"].shape[0])),
           "action_mask": torch.ones((2, 7))}
    obs["action_mask"][0, [1, 4]] = 0.0
    before = {k: v.clone() for k, v in obs.items()}
    logits = module.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    probs = torch.softmax(logits, dim=1)
    assert probs[0, [1, 4]].max() == 0 and probs[1].min() > 0
    assert all(torch.equal(before[k], obs[k]) for k in obs)  # TRPO reuses one batch: never modified in place
    assert module.compute_values({Columns.OBS: obs}).shape == (2,)
    with pytest.raises(ValueError, match="member_features has 5 rows"):
        RLModuleSpec(module_class=MemberScoringTorchRLModule, observation_space=obs_space, action_space=act_space,
                     model_config={"member_features": features[:5].tolist()}).build()


def test_trained_designer_beats_a_random_policy_on_unseen_targets(ray_local):
    from experiments.design.env_problem import ObjectiveProblem
    from experiments.design.objective import DesignObjective
    from experiments.design.planted import PlantedForwardModel, make_planted_world, planted_targets
    from experiments.design.rl_designer import propose, train_designer

    world = make_planted_world(library_size=100, seed=0)
    model = PlantedForwardModel(world)
    test = planted_targets(world, 8, seed=1)
    train = planted_targets(world, 200, seed=2, exclude=[frozenset(p) for p, _ in test])
    problems = [ObjectiveProblem(DesignObjective(model, target_latent=cells), world.library) for _, cells in train]
    trained = train_designer(problems, world.features, max_size=2, trpo_iters=3, ppo_iters=9, batch_steps=1000, seed=0)
    assert trained.stages == "trpo->ppo" and trained.handoff_max_abs_diff == 0.0
    assert [c[0] for c in trained.curve] == ["trpo"] * 3 + ["ppo"] * 9
    assert trained.curve[-1][2] > trained.curve[0][2]  # the return rose

    def gain(designer_state, rollouts):
        out = []
        for _, cells in test:
            objective = DesignObjective(model, target_latent=cells)
            result = propose(designer_state, objective, world.library, rollouts=rollouts, width=0, seed=3)
            out.append(result.baseline.objective - result.ranked[0].objective)
        return float(np.mean(out))

    untrained = trained.__class__(**{**trained.__dict__, "state": {k: np.zeros_like(v) for k, v in trained.state.items()}})
    # zero weights: every member equally likely, a uniform random designer with the same 4 episodes
    assert gain(trained, 4) > 1.5 * gain(untrained, 4)  # measured here: 3.6 vs 0.37


def test_design_cli_trains_writes_and_reuses_the_rl_designer(tiny, tmp_path, capsys, ray_local):  # noqa: F811
    out = tmp_path / "rl"
    argv = ["--run", tiny["run"], "--target-cells", tiny["targets"], "--target-obs", "perturbation", "--max-size", "2",
            "--designer", "rl", "--rl-targets", "32", "--rl-iterations", "3", "--rollouts", "2", "--width", "5", "-q"]
    rc, stdout, err = _design([*argv, "-o", out], capsys)
    assert rc == 0, err
    assert "designer.pt" in stdout
    table = pd.read_csv(out / "design.tsv", sep="\t")
    assert set(table["designer"]) == {"rl"}
    # width 5 >= the library: the policy-led beam tries every single and pair, so it ranks first what exhaustive does
    exhaustive = tmp_path / "exhaustive"
    rc, _, err = _design([*argv[:8], "--designer", "exhaustive", "-q", "-o", exhaustive], capsys)
    assert rc == 0, err
    best = pd.read_csv(exhaustive / "design.tsv", sep="\t").groupby("target").first()["set"]
    assert table.groupby("target").first()["set"].to_dict() == best.to_dict()
    training = json.loads((out / "designer_training.json").read_text())
    assert training["stages"] == "trpo->ppo" and training["handoff_max_abs_diff"] == 0.0 and len(training["curve"]) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["designer"] == "designer.pt"
    again = tmp_path / "again"
    rc, stdout, err = _design([*argv, "--designer-checkpoint", out / "designer.pt", "-o", again], capsys)
    assert rc == 0, err
    assert not (again / "designer.pt").exists()
    assert pd.read_csv(again / "design.tsv", sep="\t").equals(table)
    _one_error(capsys, [*argv, "--designer-checkpoint", tmp_path / "missing.pt", "-o", tmp_path / "x"],
               "No trained designer")
    _one_error(capsys, [*argv[:6], "--max-size", "3", "--designer", "rl", "--designer-checkpoint", out / "designer.pt",
                        "-o", tmp_path / "x"], "smaller --max-size")
    _one_error(capsys, [*argv, "--rollouts", "0", "--width", "0", "-o", tmp_path / "x"], "both 0")
    assert not (tmp_path / "x").exists()

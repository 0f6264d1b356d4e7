"""TRPOConfig: fluent setters, defaults, and validate() errors that name the bad value (no Ray)."""

from __future__ import annotations

import pytest
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from algorithms.trpo import TRPO, TRPOConfig


def _config() -> TRPOConfig:
    return TRPOConfig().environment("CartPole-v1")


def test_fluent_training_sets_every_trpo_option():
    c = _config().training(
        kl_radius=0.02,
        cg_iters=7,
        cg_damping=0.05,
        line_search_max_steps=4,
        line_search_backtrack_ratio=0.6,
        line_search_accept_ratio=0.1,
        vf_lr=3e-4,
        vf_iters=3,
        vf_minibatch_size=64,
        lambda_=0.9,
        gamma=0.95,
        train_batch_size_per_learner=512,
    )
    assert (c.kl_radius, c.cg_iters, c.cg_damping) == (0.02, 7, 0.05)
    assert (c.line_search_max_steps, c.line_search_backtrack_ratio) == (4, 0.6)
    assert c.line_search_accept_ratio == 0.1
    assert (c.vf_lr, c.vf_iters, c.vf_minibatch_size) == (3e-4, 3, 64)
    assert (c.lambda_, c.gamma, c.train_batch_size_per_learner) == (0.9, 0.95, 512)
    assert c.algo_class is TRPO
    c.validate()


def test_defaults_validate_and_use_ppo_module_without_shared_layers():
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )

    c = _config()
    c.validate()
    assert c.get_default_rl_module_spec().module_class is DefaultPPOTorchRLModule
    assert c.model_config["vf_share_layers"] is False
    assert c.rollout_fragment_length == "auto"


@pytest.mark.parametrize(
    "option, value",
    [
        ("kl_radius", 0.0),
        ("kl_radius", -0.01),
        ("kl_radius", float("nan")),
        ("cg_iters", 0),
        ("cg_iters", 2.5),
        ("cg_damping", -0.1),
        ("line_search_max_steps", 0),
        ("line_search_backtrack_ratio", 1.0),
        ("line_search_backtrack_ratio", 0.0),
        ("line_search_accept_ratio", -1.0),
        ("vf_lr", 0.0),
        ("vf_iters", 0),
        ("vf_minibatch_size", 0),
        ("lambda_", 1.5),
        ("entropy_coeff", -0.1),
        ("pi_output_init_gain", -1.0),
    ],
)
def test_validate_names_the_bad_value(option, value):
    c = _config().training(**{option: value})
    with pytest.raises(ValueError) as err:
        c.validate()
    assert f"`{option}`" in str(err.value)
    assert repr(value) in str(err.value)


def test_refuses_several_learners():
    c = _config().learners(num_learners=2)
    with pytest.raises(ValueError, match=r"num_learners=2.*not all-reduced"):
        c.validate()
    _config().learners(num_learners=1).validate()  # one (remote) learner is fine


def test_refuses_ppo_style_epochs_and_minibatches():
    with pytest.raises(ValueError, match=r"`num_epochs` must be 1.*got 5"):
        _config().training(num_epochs=5).validate()
    with pytest.raises(ValueError, match=r"`minibatch_size` must be None.*got 128"):
        _config().training(minibatch_size=128).validate()


def test_refuses_shared_layers_and_recurrent_models():
    # A DefaultModelConfig object carries vf_share_layers=True and overrides the auto-include.
    c = _config().rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8]))
    with pytest.raises(ValueError, match="vf_share_layers=True"):
        c.validate()
    _config().rl_module(
        model_config=DefaultModelConfig(fcnet_hiddens=[8], vf_share_layers=False)
    ).validate()
    with pytest.raises(ValueError, match="recurrent"):
        _config().rl_module(model_config={"use_lstm": True}).validate()


def test_refuses_old_api_stack():
    c = _config().api_stack(
        enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False
    )
    with pytest.raises(ValueError, match="new API stack"):
        c.validate()

"""The planted-world rows of ``benchmarks/design_search.py``: every designer, the RL one trained TRPO -> PPO or PPO only.

Per seed: a planted world (:mod:`experiments.design.planted`; ``--library`` members, pathways in
parallel pairs, greedy fails by construction), ``--targets`` held-out planted pairs as queries and
``--train-targets`` other pairs to train the amortised designer on. Each RL variant (``--stages``)
is trained once per seed and then proposes for every query; ``random`` gets the RL designer's
mean evaluations (the same budget), ``beam`` and ``greedy`` their own, ``exhaustive`` runs on the
first ``--exhaustive-targets`` queries where its sets fit ``--budget``.

Rows (one per designer, seed and query): ``designer``, ``library``, ``k``, ``rank`` of the true pair,
``objective`` of the best set found, ``evaluations``, ``wall_s``; RL rows also carry the training's
``train_env_steps`` and ``train_wall_s``. The summary per designer: ``recall_at_1``,
``recall_at_10``, mean ``evaluations`` and ``wall_s``, ``evaluations_share`` (of exhaustive's),
``objective_vs_beam`` (mean ratio of the best objective found to beam's; <= 1.05 is "within 5%"),
and for RL per-seed recall (for paired comparisons of the two training schedules).
"""

from __future__ import annotations

import time

import numpy as np

SEARCHES = ("exhaustive", "beam", "greedy", "random")


def _rank(result, truth: frozenset) -> int | None:
    return next((i + 1 for i, s in enumerate(result.ranked) if frozenset(s.members) == truth), None)


def planted_rows(seed: int, *, library: int, k: int, n_targets: int, n_train: int, stages: list[str], iterations: int,
                 budget: int, exhaustive_targets: int, beam_width: int, structured: bool = True,
                 log=print) -> list[dict]:
    """Rows of one seed (module docstring)."""
    from experiments.design.env_problem import ObjectiveProblem
    from experiments.design.objective import DesignObjective
    from experiments.design.planted import PlantedForwardModel, make_planted_world, planted_targets
    from experiments.design.rl_designer import propose, train_designer
    from experiments.design.search import n_sets, run_designer

    world = make_planted_world(library_size=library, n_latent=8, structured=structured, seed=seed)
    model = PlantedForwardModel(world)
    queries = planted_targets(world, n_targets, seed=seed + 1000)
    train = planted_targets(world, n_train, seed=seed + 2000, exclude=[frozenset(p) for p, _ in queries])
    problems = [ObjectiveProblem(DesignObjective(model, target_latent=cells), world.library) for _, cells in train]
    base = {"seed": seed, "library": len(world.library), "k": k, "structured": structured}
    rows: list[dict] = []
    rl_evaluations = []
    for stage in stages:
        trpo = iterations // 4
        trained = train_designer(problems, world.features, max_size=k, trpo_iters=trpo, ppo_iters=iterations - trpo,
                                 ppo_only=stage == "ppo", seed=seed, log=lambda m: log(f"seed {seed} {stage}: {m}"))
        name = "rl" if stage == "trpo->ppo" else "rl-ppo-only"
        log(f"seed {seed} {name}: trained in {trained.wall_s:.0f}s, {trained.env_steps} env steps, final return "
            f"{trained.curve[-1][2]:.3g}")
        for pair, cells in queries:
            objective = DesignObjective(model, target_latent=cells)
            result = propose(trained, objective, world.library, max_size=k, seed=seed)
            rows.append({**base, "designer": name, "target": "+".join(pair), "rank": _rank(result, frozenset(pair)),
                         "objective": result.ranked[0].objective, "evaluations": result.evaluations,
                         "wall_s": round(result.wall_s, 3), "train_env_steps": trained.env_steps,
                         "train_wall_s": round(trained.wall_s, 1), "curve": trained.curve})
            if name == "rl":
                rl_evaluations.append(result.evaluations)
    random_budget = int(np.mean(rl_evaluations)) if rl_evaluations else len(world.library) * k
    for designer in SEARCHES:
        for index, (pair, cells) in enumerate(queries):
            if designer == "exhaustive" and (index >= exhaustive_targets or n_sets(len(world.library), k) > budget):
                continue
            objective = DesignObjective(model, target_latent=cells, budget=random_budget if designer == "random" else None)
            started = time.perf_counter()
            result = run_designer(objective, world.library, designer=designer, max_size=k, beam_width=beam_width,
                                  seed=seed)
            rows.append({**base, "designer": designer, "target": "+".join(pair), "rank": _rank(result, frozenset(pair)),
                         "objective": result.ranked[0].objective, "evaluations": result.evaluations,
                         "wall_s": round(time.perf_counter() - started, 3)})
        log(f"seed {seed} {designer}: done")
    return rows


def summarize_planted(rows: list[dict]) -> list[dict]:
    """Recall, evaluations, wall time and objective against beam's, per designer (module docstring)."""
    beam = {(r["seed"], r["target"]): r["objective"] for r in rows if r["designer"] == "beam"}
    exhaustive = [r["evaluations"] for r in rows if r["designer"] == "exhaustive"]
    out = []
    for designer in dict.fromkeys(r["designer"] for r in rows):
        mine = [r for r in rows if r["designer"] == designer]

        def recall(subset, at):
            return float(np.mean([r["rank"] is not None and r["rank"] <= at for r in subset]))

        entry = {"designer": designer, "library": mine[0]["library"], "k": mine[0]["k"],
                 "structured": mine[0]["structured"], "n_targets": len(mine), "recall_at_1": recall(mine, 1),
                 "recall_at_10": recall(mine, 10), "evaluations": float(np.mean([r["evaluations"] for r in mine])),
                 "wall_s": float(np.mean([r["wall_s"] for r in mine]))}
        if exhaustive:
            entry["evaluations_share"] = entry["evaluations"] / float(np.mean(exhaustive))
        ratios = [r["objective"] / beam[(r["seed"], r["target"])] for r in mine
                  if beam.get((r["seed"], r["target"]), 0) > 0]
        if ratios:
            entry["objective_vs_beam"] = float(np.mean(ratios))
        if "train_env_steps" in mine[0]:
            entry["train_env_steps"] = float(np.mean([r["train_env_steps"] for r in mine]))
            entry["train_wall_s"] = float(np.mean([r["train_wall_s"] for r in mine]))
            entry["recall_at_1_per_seed"] = {str(s): recall([r for r in mine if r["seed"] == s], 1)
                                             for s in sorted({r["seed"] for r in mine})}
        out.append(entry)
    return out

"""`pretrainlab mixing-policy RUN [RUN ...] --out policy.json`: fit the `linear` mixing policy from the
re-weighting trajectories that `mixing_agent` runs logged (recipes/mixing_linear.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mixing-policy",
        help="fit a linear mixing policy from mixing_agent runs' logged trajectories",
        description="Read the (state, mixture, reward) transitions that runs trained with the mixing_agent "
        "callback logged in their metrics.jsonl (policy: random explores), fit W and b of p = softmax(W "
        "features + b) by reward-weighted regression (a light stand-in for the Data Mixing Agent's "
        "Conservative Q-Learning), and write the policy file that `mixing_agent` with {policy: linear, "
        "policy_path: FILE} reads. Docs: docs/mixing-agent.md.",
    )
    p.add_argument("runs", nargs="+", help="run folders trained with the mixing_agent callback (same domains)")
    p.add_argument("--out", required=True, help="the policy file to write (JSON)")
    p.add_argument("--beta", type=float, default=None,
                   help="reward temperature of the weights exp((r - max r) / beta); default: the rewards' std")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 penalty on W (default 1e-2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pretrainlab.errors import DataError
    from pretrainlab.recipes.mixing_linear import fit_linear_policy, read_trajectories, save_linear_policy

    domains = None
    trajectories = []
    for run_dir in args.runs:
        names, transitions = read_trajectories(run_dir)
        if domains is not None and names != domains:
            raise DataError(f"{run_dir}: its domains {names} differ from {args.runs[0]}'s {domains}",
                            hint="fit on runs over the same prepared domains")
        domains = names
        trajectories.append(transitions)
    params = fit_linear_policy(trajectories, domains=domains, beta=args.beta, l2=args.l2)
    save_linear_policy(params, args.out)
    rewards = np.asarray([t.reward for traj in trajectories for t in traj])
    print(f"fitted a linear mixing policy over {', '.join(domains or [])} from {len(rewards)} transitions of "
          f"{len(trajectories)} run(s) (reward mean {rewards.mean():.4g}, sd {rewards.std():.4g}; "
          f"beta {params.fit['beta']:.4g}); wrote {args.out}")
    print(f"use it with: callbacks: [{{name: mixing_agent, options: {{policy: linear, policy_path: {args.out}}}}}]")
    return 0

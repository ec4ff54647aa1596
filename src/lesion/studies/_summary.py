"""A run's headline numbers: intact accuracy, most damaging lesions, largest class gain."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lesion.store import Run


@dataclass(frozen=True)
class RunSummary:
    """Headline numbers of a run; ``text`` is what the CLI prints.

    ``drops``: one row per lesion with its overall top-1 drop in percentage points (positive =
    damage), largest first. ``gain``: the lesion and class with the largest class-specific
    top-1 increase (pp), or None when no lesion improves any class.
    """

    intact: pd.Series
    drops: pd.DataFrame
    gain: tuple[str, str, float] | None
    text: str


def run_summary(run: Run, top: int = 5, plan: str | None = None) -> RunSummary:
    """Summarise ``run`` (optionally one plan of it)."""
    table = run.table("top1")
    intact = table.loc["intact"]
    lesions = table.drop(index="intact")
    if plan is not None:
        lesions = lesions.loc[[k for k in run.lesions(plan)["key"] if k in lesions.index]]
    change = (lesions - intact) * 100
    drops = pd.DataFrame({"lesion": change.index, "drop_pp": -change["all"].to_numpy()}).sort_values(
        "drop_pp", ascending=False, kind="stable"
    )
    per_class = change.drop(columns="all")
    gain = None
    if len(per_class) and per_class.to_numpy().max() > 0:
        stacked = per_class.stack()
        key, cls = stacked.idxmax()
        gain = (str(key), str(cls), float(stacked.max()))
    lines = [f"Intact network: top-1 {100 * intact['all']:.2f} % on {len(run.labels)} samples"]
    lines.append("  per class: " + ", ".join(f"{c} {100 * v:.1f} %" for c, v in intact.drop("all").items()))
    if len(drops):
        lines.append(f"Largest overall top-1 drops ({len(drops)} lesions):")
        for _, row in drops.head(top).iterrows():
            worst = per_class.loc[row["lesion"]].nsmallest(2)
            hit = ", ".join(f"{c} {v:+.1f} pp" for c, v in worst.items())
            lines.append(f"  {row['lesion']:<24} -{row['drop_pp']:.2f} pp   (most hit: {hit})")
    lines.append(
        f"Largest class-specific gain: {gain[0]} on class {gain[1]}: +{gain[2]:.2f} pp" if gain else "No lesion improved any class."
    )
    return RunSummary(intact, drops.reset_index(drop=True), gain, "\n".join(lines))

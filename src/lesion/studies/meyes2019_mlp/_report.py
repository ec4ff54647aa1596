"""The 2019 MLP study's report: its figures, and summary.md with each number the paper reports beside ours.

The paper numbers its units 1..20 in the text; `lesion` numbers them from 0, so the paper's
unit 12 is our ``fc1:11``. Every "ours" cell names units 0-based.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.data import Split
from lesion.models import load_checkpoint
from lesion.report import bullet_list, markdown_table, timings_table
from lesion.stats import OVERALL, ClassDropSpread, pair_parts, ranked_pairs, unit_drops
from lesion.store import Run
from lesion.studies._study import StudyDir

LOW_DROP_PP = 2.0
"""A unit whose lesion costs less than this many pp overall counts as "≈1 % drop" (pruning candidate)."""

SUMMARY_COLUMNS = ("quantity", "paper", "reference network", "population")


@dataclass(frozen=True)
class StudyTables:
    """The study's analysed tables, over all networks (see `lesion.stats.lesion_effects` and its neighbours)."""

    effects: pd.DataFrame
    pairs: pd.DataFrame
    correlations: pd.DataFrame
    spread_population: pd.DataFrame
    reference_network: int
    class_names: tuple[str, ...]
    alpha: float


@dataclass(frozen=True)
class Analysis:
    """The unit attributes and analysed tables of the whole population."""

    attributes: pd.DataFrame
    tables: StudyTables
    spread: ClassDropSpread
    attribute_effects: pd.DataFrame


def summary_table(tables: StudyTables) -> pd.DataFrame:
    """One row per number the paper reports (plus our statistics), columns `SUMMARY_COLUMNS`.

    "reference network" is the first network of the population (training seed ``reference_network``);
    "population" summarises over all networks (mean ± sd and range of per-network values, or pooled).
    """
    rows = [row(tables) for row in ROWS]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _intact(tables: StudyTables) -> pd.DataFrame:
    """(network, class) -> intact top-1, from the first lesion's rows of each network."""
    effects = tables.effects
    first = effects[effects["lesion"] == effects.groupby("network")["lesion"].transform("first")]
    return first.pivot_table(index="network", columns="class", values="intact_top1")


def _spread(values: pd.Series, fmt: Callable[[float], str]) -> str:
    values = values.dropna()
    if len(values) < 2:
        return fmt(float(values.iloc[0])) if len(values) else "n/a"
    sd = fmt(values.std(ddof=1)).lstrip("+")
    return f"{fmt(values.mean())} ± {sd} ({fmt(values.min())} – {fmt(values.max())}; {len(values)} networks)"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _pp(v: float) -> str:
    return f"{v:.1f} pp"


def _class(tables: StudyTables, c: int) -> str:
    return f"class {tables.class_names[c]}"


def _accuracy_row(tables: StudyTables) -> list[str]:
    intact = _intact(tables)
    return [
        "Test accuracy of the trained MLP (top-1)",
        "94.6 %",
        _pct(intact.loc[tables.reference_network, OVERALL]),
        _spread(intact[OVERALL], _pct),
    ]


def _class_extreme_row(tables: StudyTables, lowest: bool) -> list[str]:
    intact = _intact(tables).drop(columns=OVERALL)
    pick = intact.idxmin(axis=1) if lowest else intact.idxmax(axis=1)
    value = intact.min(axis=1) if lowest else intact.max(axis=1)
    ref = tables.reference_network
    common = pick.mode().iloc[0]
    return [
        f"{'Lowest' if lowest else 'Highest'} class accuracy",
        "91.4 % (class 8)" if lowest else "98.4 % (class 1)",
        f"{_pct(value.loc[ref])} ({_class(tables, pick.loc[ref])})",
        f"{_spread(value, _pct)}; most often {_class(tables, common)} ({int((pick == common).sum())} of {len(pick)})",
    ]


def _drops(tables: StudyTables) -> pd.DataFrame:
    return unit_drops(tables.effects, "fc1")


def _largest_drop_row(tables: StudyTables) -> list[str]:
    overall = _drops(tables).query("`class` == -1")
    best = overall.loc[overall.groupby("network")["drop"].idxmax()].set_index("network")
    ref = best.loc[tables.reference_network]
    return [
        "Largest overall drop of a single fc1 unit's lesion",
        "44.5 pp (unit 12 = our fc1:11)",
        f"{_pp(ref['drop'])} (fc1:{int(ref['unit'])})",
        _spread(best["drop"], _pp),
    ]


def _low_drop_row(tables: StudyTables) -> list[str]:
    overall = _drops(tables).query("`class` == -1")
    low = overall[overall["drop"] < LOW_DROP_PP]
    n_units = overall.groupby("network")["unit"].nunique()
    counts = low.groupby("network").size().reindex(n_units.index, fill_value=0)
    ref = low[low["network"] == tables.reference_network]
    names = ", ".join(f"fc1:{u} ({d + 0.0:.1f})" for u, d in zip(ref["unit"], ref["drop"], strict=True))
    return [
        f"fc1 units whose lesion costs < {LOW_DROP_PP:g} pp overall (pruning candidates)",
        "4 of 20 (units 6, 11, 13, 18 = our 5, 10, 12, 17; unit 6: 1.4 pp)",
        f"{len(ref)} of {n_units.loc[tables.reference_network]}" + (f": {names}" if names else ""),
        _spread(counts.astype(float), lambda v: f"{v:.1f}") + " units per network",
    ]


def _class_gain_row(tables: StudyTables) -> list[str]:
    per_class = _drops(tables).query("`class` >= 0")
    best = per_class.loc[per_class.groupby("network")["change_pp"].idxmax()].set_index("network")
    ref = best.loc[tables.reference_network]
    mark = "survives BH" if ref["bh_reject"] else "does not survive BH"
    return [
        "Largest class-specific gain from a single fc1 unit's lesion",
        "+5.7 pp on class 5 (unit 3 = our fc1:2)",
        f"{ref['change_pp']:+.1f} pp on {_class(tables, int(ref['class']))} (fc1:{int(ref['unit'])}; {mark})",
        _spread(best["change_pp"], lambda v: f"{v:+.1f} pp"),
    ]


def _pvalue_correlations(tables: StudyTables) -> pd.DataFrame:
    c = tables.correlations
    return c[(c["layer"] == "fc1") & (c["attribute"] == "mw_p") & (c["class"] == OVERALL)]


def _coefficients(r: pd.Series) -> str:
    return (
        f"Pearson r = {r['pearson_r']:.2f} (p = {r['pearson_p']:.1e}), "
        f"Spearman ρ = {r['spearman_r']:.2f} (p = {r['spearman_p']:.1e}), n = {int(r['n'])}"
    )


def _correlation_row(tables: StudyTables) -> list[str]:
    c = _pvalue_correlations(tables)
    ref = c[(~c["pooled"]) & (c["network"] == tables.reference_network)].iloc[0]
    pooled = c[c["pooled"]].iloc[0]
    return [
        "Correlation of a unit's Mann-Whitney p (weights at init vs trained) with its overall drop (fc1; Fig. 9)",
        "negative: the smaller p, the larger the drop",
        _coefficients(ref),
        "pooled: " + _coefficients(pooled),
    ]


def _coefficient_signs_row(tables: StudyTables) -> list[str]:
    c = _pvalue_correlations(tables)
    per = c[~c["pooled"]]
    n = len(per)
    return [
        "Per-network coefficients that are negative (Fig. 10)",
        "all but two Pearson coefficients (18 of 20)",
        "—",
        f"Pearson {int((per['pearson_r'] < 0).sum())} of {n}, Spearman {int((per['spearman_r'] < 0).sum())} of {n}; "
        f"median r = {per['pearson_r'].median():.2f}, ρ = {per['spearman_r'].median():.2f}",
    ]


def _pair_cell(row: pd.Series, tables: StudyTables) -> str:
    a, b = row["unit_a"], row["unit_b"].split(":")[1]
    where = "overall" if row["class"] == OVERALL else _class(tables, int(row["class"]))
    return (
        f"{a}+{b}, {where}: pair {row['pair']:+.2f} pp vs singles {row['single_a']:+.2f} {row['single_b']:+.2f} "
        f"(synergy {row['synergy']:+.2f} pp; {int(row['n_lost_pair_only'])} samples lost only after the pair)"
    )


def _pair_row(tables: StudyTables, kind: str, overall: bool) -> list[str]:
    pairs = tables.pairs
    ref_pairs = pairs[pairs["network"] == tables.reference_network]
    top = ranked_pairs(ref_pairs, kind, top=1, overall=overall)
    per_network = pd.concat([ranked_pairs(g, kind, top=1, overall=overall) for _, g in pairs.groupby("network")])
    ours = _pair_cell(top.iloc[0], tables) if len(top) else "none"
    population = _spread(per_network["synergy"], lambda v: f"{v:+.2f} pp") if len(per_network) else "none"
    if kind == "negative":
        label = f"Most super-additive damage of an fc1 pair ({'overall' if overall else 'any class'}; Fig. 12)"
        paper = "units 4+16 (our fc1:3+15)" + ("" if overall else "; units 12+19: class 6 > 50 % lost only after the pair")
    else:
        label = "Most super-additive class gain of an fc1 pair (Fig. 13, A.4)"
        paper = "units 5+10 (our fc1:4+9): class 5 +5.16 pp vs singles +3.14 and +0.45 pp"
    return [label, paper, ours, "synergy " + population]


def _bh_row(tables: StudyTables) -> list[str]:
    gains = tables.effects.query("`class` >= 0 and change_pp > 0")

    def cell(rows: pd.DataFrame) -> str:
        return f"{int(rows['bh_reject'].sum())} of {len(rows)} class gains"

    per_network = gains.groupby("network")["bh_reject"].sum()
    return [
        f"Class gains surviving Benjamini-Hochberg (FDR {tables.alpha:g}, exact McNemar, one family per network's sweep)",
        "not tested",
        cell(gains[gains["network"] == tables.reference_network]),
        f"{cell(gains)}; per network {_spread(per_network.astype(float), lambda v: f'{v:.1f}')}",
    ]


def _significant_drops_row(tables: StudyTables) -> list[str]:
    overall = tables.effects.query("`class` == -1")

    def cell(rows: pd.DataFrame) -> str:
        return f"{int((rows['bh_reject'] & (rows['change_pp'] < 0)).sum())} of {len(rows)} lesions"

    return [
        "Lesions whose overall drop survives Benjamini-Hochberg",
        "not tested",
        cell(overall[overall["network"] == tables.reference_network]),
        cell(overall),
    ]


def _spread_row(tables: StudyTables) -> list[str]:
    pop = tables.spread_population.query("`class` >= 0").set_index("class")["mean_std"]
    order = pop.sort_values(ascending=False)
    high = ", ".join(f"{_class(tables, int(c))} ({v:.1f})" for c, v in order.head(2).items())
    low = ", ".join(f"{_class(tables, int(c))} ({v:.1f})" for c, v in order.tail(1).items())
    return [
        "Classes with the largest / smallest spread of class drops over fc1 units (mean std, pp; Fig. 11)",
        "largest: classes 1 and 4; small: class 2",
        "—",
        f"largest: {high}; smallest: {low}",
    ]


ROWS: tuple[Callable[[StudyTables], list[str]], ...] = (
    _accuracy_row,
    lambda t: _class_extreme_row(t, lowest=True),
    lambda t: _class_extreme_row(t, lowest=False),
    _largest_drop_row,
    _low_drop_row,
    _class_gain_row,
    _correlation_row,
    _coefficient_signs_row,
    lambda t: _pair_row(t, "negative", overall=True),
    lambda t: _pair_row(t, "negative", overall=False),
    lambda t: _pair_row(t, "positive", overall=False),
    _bh_row,
    _significant_drops_row,
    _spread_row,
)


def write_summary(study: StudyDir, analysis: Analysis, settings: Mapping[str, object]) -> pd.DataFrame:
    """Write ``summary.md`` (settings, the paper-versus-measured table, details, wall times, files); returns the table."""
    tables = analysis.tables
    table = summary_table(tables)
    network = tables.reference_network
    details = {
        f"Largest class gains of single-unit lesions (network seed {network})": class_gain_details(tables),
        f"Most super-additive damage, fc1 pairs (network seed {network})": pair_details(tables, "negative"),
        f"Most super-additive gains, fc1 pairs (network seed {network})": pair_details(tables, "positive"),
    }
    lines = ["# Meyes et al. (2019), shallow MLP: reproduction summary", "", bullet_list(settings)]
    lines += [
        "",
        "Units are numbered from 0 here (`fc1:0` .. `fc1:19`); the paper numbers them 1..20 in its text, "
        "so the paper's unit 12 is our `fc1:11`. Drops are in percentage points (pp), positive = damage; "
        "synergy = pair change − (sum of the single changes), negative = the pair hurts more than its parts.",
        "",
        markdown_table(table),
        "",
    ]
    for title, frame in details.items():
        lines += [f"## {title}", "", markdown_table(frame) if len(frame) else "(none)", ""]
    lines += ["## Wall time per stage", "", timings_table(study.timings), "", "## Figures", ""]
    lines += [f"- {name}: " + ", ".join(f"`{p.relative_to(study.out)}`" for p in paths) for name, paths in study.figures.items()]
    lines += ["", "## Tables", ""]
    lines += [f"- {name}: `{path.relative_to(study.out)}`" for name, path in study.tables.items()]
    study.write_summary("\n".join(lines) + "\n")
    return table


def class_gain_details(tables: StudyTables, top: int = 10) -> pd.DataFrame:
    """The reference network's largest class gains of single-unit lesions, with their tests."""
    effects = tables.effects
    rows = effects[
        (effects["network"] == tables.reference_network) & (effects["size"] == 1)
        & (effects["class"] >= 0) & (effects["change_pp"] > 0)
    ].sort_values("change_pp", ascending=False, kind="stable").head(top)
    return pd.DataFrame(
        {
            "lesion": rows["lesion"],
            "class": [tables.class_names[c] for c in rows["class"]],
            "change": [f"{v:+.2f} pp" for v in rows["change_pp"]],
            "lost / gained": [f"{b} / {c}" for b, c in zip(rows["lost"], rows["gained"], strict=True)],
            "McNemar p": [f"{v:.2g}" for v in rows["mcnemar_p"]],
            "BH q": [f"{v:.2g}" for v in rows["bh_q"]],
            "survives BH": ["yes" if v else "no" for v in rows["bh_reject"]],
        }
    )


def pair_details(tables: StudyTables, kind: str, top: int = 5) -> pd.DataFrame:
    """The reference network's most super-additive pairs of `kind` (class rows), as text."""
    pairs = tables.pairs[tables.pairs["network"] == tables.reference_network]
    rows = ranked_pairs(pairs, kind, top=top)
    return pd.DataFrame(
        {
            "pair": [f"{a}+{b.split(':')[1]}" for a, b in zip(rows["unit_a"], rows["unit_b"], strict=True)],
            "class": [tables.class_names[c] for c in rows["class"]],
            "pair change": [f"{v:+.2f} pp" for v in rows["pair"]],
            "singles": [f"{a:+.2f}, {b:+.2f} pp" for a, b in zip(rows["single_a"], rows["single_b"], strict=True)],
            "synergy": [f"{v:+.2f} pp" for v in rows["synergy"]],
            "lost only after the pair": rows["n_lost_pair_only"].astype(int).tolist(),
        }
    )


# --- figures ----------------------------------------------------------------------------------


def draw_figures(
    study: StudyDir, analysis: Analysis, run: Run, checkpoint: Path, embedding: np.ndarray, split: Split
) -> None:
    """The paper's figures (PNG + SVG) for the reference network ``run`` and the population; closes ``run``."""
    _Figures(study, analysis, run, checkpoint, embedding, split).draw()


class _Figures:
    """The paper's figures for the reference network (single lesions, pairs) and the population."""

    def __init__(
        self, study: StudyDir, analysis: Analysis, run: Run, checkpoint: Path, embedding: np.ndarray, split: Split
    ) -> None:
        self.study, self.analysis, self.run, self.checkpoint, self.embedding = study, analysis, run, checkpoint, embedding
        self.split = split
        tables = analysis.tables
        self.network = tables.reference_network
        self.effects = tables.effects[tables.effects["network"] == self.network]
        self.pairs = tables.pairs[tables.pairs["network"] == self.network]

    def draw(self) -> None:
        from lesion.plots._mlp import EmbeddingView

        try:
            drops = unit_drops(self.effects, "fc1")
            overall = drops[drops["class"] == OVERALL].sort_values("drop", ascending=False, kind="stable")
            units = [f"fc1:{u}" for u in overall["unit"]]
            largest, second, smallest = units[0], units[1], units[-1]
            selective = self._selective_unit(drops, exclude=largest)
            gain = drops[drops["class"] >= 0].sort_values("change_pp", ascending=False, kind="stable").iloc[0]
            low = overall[overall["drop"] < LOW_DROP_PP]
            low_units = [f"fc1:{u}" for u in (low if len(low) else overall.tail(4))["unit"].head(4)]
            negative = ranked_pairs(self.pairs, "negative", top=1, overall=True)
            positive = self._positive_pair()

            self._save("fig01-tsne", EmbeddingView.from_run(self.run, self.embedding).plot().figure_, self._title(1))
            self._outcomes("fig02-intact", ["intact"], 2)
            self._outcomes("fig03-largest-drop", [largest], 3)
            self._outcomes("figA1-second-largest-drop", [second], "A.1")
            self._outcomes("fig04-selective-unit", [selective], 4)
            self._outcomes("fig05-smallest-drop", [smallest], 5)
            self._outcomes("figA2-low-drop-units", low_units, "A.2")
            self._outcomes("fig06-median-drop", [units[len(units) // 2]], 6)
            self._outcomes("fig07-largest-class-gain", [f"fc1:{int(gain['unit'])}"], 7)
            self._weight_maps()
            self._population_figures()
            pair = negative["lesion"].iloc[0] if len(negative) else self.pairs["lesion"].iloc[0]
            self._outcomes("fig12-negative-synergy-pair", [pair], 12)
            self._outcomes("fig13-positive-synergy-pair", [positive], 13)
            self._outcomes("figA3-pair-of-fig3-fig4-units", [_pair_key(largest, selective)], "A.3")
            self._outcomes("figA4-singles-of-fig13-pair", list(pair_parts(positive)), "A.4", embedding=False)
        finally:
            self.run.close()

    def _selective_unit(self, drops: pd.DataFrame, exclude: str) -> str:
        """Fig. 4: the fc1 unit whose lesion hits one class hardest relative to the others.

        Score: the largest class drop minus the mean drop of the other classes (pp).
        """
        per_class = drops[drops["class"] >= 0].pivot(index="unit", columns="class", values="drop")
        top = per_class.max(axis=1)
        score = top - (per_class.sum(axis=1) - top) / (per_class.shape[1] - 1)
        ranked = [f"fc1:{u}" for u in score.sort_values(ascending=False, kind="stable").index]
        return next(u for u in ranked if u != exclude)

    def _positive_pair(self) -> str:
        """Fig. 13: the pair whose class gain most exceeds its singles' (else the largest class synergy)."""
        top = ranked_pairs(self.pairs, "positive", top=1)
        if len(top):
            return str(top["lesion"].iloc[0])
        rows = self.pairs[self.pairs["class"] >= 0]
        return str(rows.loc[rows["synergy"].idxmax(), "lesion"])

    def _outcomes(self, name: str, lesions: list[str], figure: int | str, embedding: bool = True) -> None:
        import matplotlib.pyplot as plt

        from lesion.plots._mlp import LesionOutcomeView

        panels = 2 if embedding else 1
        rows, cols = (len(lesions), panels) if embedding else (1, len(lesions))
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.9 * rows), squeeze=False)
        for i, key in enumerate(lesions):
            view = LesionOutcomeView.from_run(self.run, key, self.embedding if embedding else None, self.effects)
            view.plot(axes[i] if embedding else axes[0, i])
        self._save(name, fig, self._title(figure) + " (units 0-based)")

    def _weight_maps(self) -> None:
        from lesion.plots._mlp import WeightMaps

        checkpoint = load_checkpoint(self.checkpoint)
        trained = checkpoint["trained"]["fc1.weight"]
        initial = checkpoint.get("initial", {}).get("fc1.weight")
        attrs = self.analysis.attributes
        p = attrs[(attrs["network"] == self.network) & (attrs["layer"] == "fc1") & (attrs["attribute"] == "mw_p")]
        shape = self.split.input_shape
        fan_in = int(trained.shape[1])
        image = (int(shape[-2]), int(shape[-1])) if len(shape) >= 2 and shape[-2] * shape[-1] == fan_in else (1, fan_in)
        view = WeightMaps.from_weights(trained, p.sort_values("unit")["value"], image, initial=initial).plot()
        self._save("fig08-weight-maps", view.figure_)

    def _population_figures(self) -> None:
        from lesion.plots._mlp import AttributeDropScatter, ClassSpreadLines, CoefficientDensity

        table = self.analysis.attribute_effects
        scatter = AttributeDropScatter.from_table(table, "mw_p", self.network).plot()
        self._save("fig09-pvalue-vs-drop", scatter.figure_, self._title(9, population=True))
        c = self.analysis.tables.correlations
        rows = c[(c["layer"] == "fc1") & (c["attribute"] == "mw_p") & (c["class"] == OVERALL)]
        self._save("fig10-coefficient-density", CoefficientDensity.from_table(rows, "mw_p").plot().figure_, self._title(10, population=True))
        lines = ClassSpreadLines.from_spread(self.analysis.spread, self.split.class_names).plot()
        self._save("fig11-class-spread", lines.figure_, self._title(11, population=True))

    def _title(self, figure: int | str, population: bool = False) -> str:
        who = f"{self.analysis.tables.effects['network'].nunique()} networks" if population else f"network seed {self.network}"
        return f"Meyes et al. 2019, Fig. {figure} analogue: {who}"

    def _save(self, name: str, fig: Any, title: str | None = None) -> None:
        self.study.save_figure(name, fig, title=title, tight=True)


def _pair_key(a: str, b: str) -> str:
    """The two-unit lesion key of two single-unit keys of one layer."""
    (layer_a, (u,)), (layer_b, (v,)) = Lesion.from_key(a).units[0], Lesion.from_key(b).units[0]
    if layer_a != layer_b:
        raise LesionError(f"expected two units of one layer, got {a!r} and {b!r}")
    return Lesion(((layer_a, tuple(sorted((u, v)))),)).key

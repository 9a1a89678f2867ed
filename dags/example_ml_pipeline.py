"""A small, deterministic ML pipeline, recorded end to end by airflow-repro.

ingest -> featurize -> train -> evaluate on scikit-learn's bundled wine dataset (it ships inside
the package, so the pipeline needs no network). Every task's inputs are pinned to commit ids, its
outputs are committed with its manifest on the run's branch, and its metrics go to MLflow.
"""

from __future__ import annotations

from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime

SEED = 42


@dag(
    dag_id="example_ml_pipeline",
    schedule=None,
    catchup=False,
    tags=["airflow-repro", "example"],
    params={"test_size": 0.25, "n_estimators": 50},
    doc_md=__doc__,
)
def example_ml_pipeline():
    @repro_task(outputs=["raw/wine.csv"], seed=SEED)
    def ingest():
        from sklearn.datasets import load_wine

        ctx = runtime.current()
        frame = load_wine(as_frame=True).frame
        frame.to_csv(ctx.output_path("raw/wine.csv"), index=False)
        ctx.log_metric("rows", len(frame))
        return {"rows": len(frame)}

    @repro_task(
        inputs={"raw": Input("raw/wine.csv")},
        outputs=["features/train.csv", "features/test.csv"],
        seed=SEED,
    )
    def featurize(params=None):
        import pandas as pd
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        ctx = runtime.current()
        frame = pd.read_csv(ctx.input_path("raw"))
        features, target = frame.drop(columns="target"), frame["target"]
        x_train, x_test, y_train, y_test = train_test_split(
            features, target, test_size=params["test_size"], random_state=ctx.seed, stratify=target
        )
        scaler = StandardScaler().fit(x_train)
        for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            scaled = pd.DataFrame(scaler.transform(x), columns=features.columns).round(10)
            scaled["target"] = y.to_numpy()
            scaled.to_csv(ctx.output_path(f"features/{name}.csv"), index=False)
        ctx.log_metrics({"train_rows": len(x_train), "test_rows": len(x_test)})

    @repro_task(inputs={"train": Input("features/train.csv")}, outputs=["models/model.json"], seed=SEED)
    def train(params=None):
        import json

        import pandas as pd
        from sklearn.linear_model import LogisticRegression

        ctx = runtime.current()
        frame = pd.read_csv(ctx.input_path("train"))
        model = LogisticRegression(max_iter=500, random_state=ctx.seed)
        model.fit(frame.drop(columns="target"), frame["target"])
        exported = {
            "classes": model.classes_.tolist(),
            "coef": [[round(v, 10) for v in row] for row in model.coef_.tolist()],
            "intercept": [round(v, 10) for v in model.intercept_.tolist()],
            "features": list(frame.columns.drop("target")),
        }
        with ctx.open_output("models/model.json", "w") as handle:
            json.dump(exported, handle, sort_keys=True, indent=1)
        ctx.log_metric("train_accuracy", float(model.score(frame.drop(columns="target"), frame["target"])))

    @repro_task(
        inputs={"model": Input("models/model.json"), "test": Input("features/test.csv")},
        outputs=["reports/metrics.json"],
        seed=SEED,
    )
    def evaluate():
        import json

        import numpy as np
        import pandas as pd
        from sklearn.metrics import accuracy_score, f1_score

        ctx = runtime.current()
        with ctx.open_input("model", "r") as handle:
            model = json.load(handle)
        frame = pd.read_csv(ctx.input_path("test"))
        scores = frame[model["features"]].to_numpy() @ np.array(model["coef"]).T + np.array(model["intercept"])
        predicted = np.array(model["classes"])[scores.argmax(axis=1)]
        metrics = {
            "accuracy": round(float(accuracy_score(frame["target"], predicted)), 6),
            "f1_macro": round(float(f1_score(frame["target"], predicted, average="macro")), 6),
        }
        with ctx.open_output("reports/metrics.json", "w") as handle:
            json.dump(metrics, handle, sort_keys=True)
        ctx.log_metrics(metrics)
        return metrics

    ingest() >> featurize() >> train() >> evaluate()


example_ml_pipeline()

"""Keys that tie the systems together: commit metadata (lakeFS conventions) and MLflow tags.

Commit metadata follows the lakeFS "Syphon" convention (``::lakefs::Airflow::…``) so the lakeFS UI
shows buttons back to Airflow and MLflow; MLflow tags are namespaced dotted keys.
"""

# commit metadata
TASK_KEY = "repro.task_key"
TRY_NUMBER = "repro.try_number"
MANIFEST_DIGEST = "repro.manifest_digest"
MANIFEST_PATH = "repro.manifest_path"
ENV_PIN = "repro.env_pin"
OUTPUTS_DIGEST = "repro.outputs_digest"
KIND = "repro.kind"
DAG_RUN_MANIFEST_DIGEST = "repro.dag_run_manifest_digest"
REPLAY_OF = "repro.replay_of"
REPLAY_MODE = "repro.replay_mode"
VERDICT = "repro.verdict"
LAKEFS_AIRFLOW_DAG_ID = "::lakefs::Airflow::dag_id"
LAKEFS_AIRFLOW_RUN_ID = "::lakefs::Airflow::dag_run_id"
LAKEFS_AIRFLOW_URL = "::lakefs::Airflow::url[url:ui]"  # the lakeFS UI's button back to the Airflow run
AIRFLOW_TASK_ID = "airflow_task_id"
LAKEFS_MLFLOW_RUN_ID = "::lakefs::MLflow::run_id"
LAKEFS_MLFLOW_URL = "::lakefs::MLflow::url[url:ui]"

# MLflow tags
MLFLOW_DAG_ID = "airflow.dag_id"
MLFLOW_RUN_ID = "airflow.run_id"
MLFLOW_TASK_ID = "airflow.task_id"
MLFLOW_MAP_INDEX = "airflow.map_index"
MLFLOW_TRY_NUMBER = "airflow.try_number"
MLFLOW_REPOSITORY = "repro.repository"
MLFLOW_BRANCH = "repro.branch"
MLFLOW_COMMIT_ID = "repro.commit_id"
MLFLOW_MANIFEST_DIGEST = "repro.manifest_digest"
MLFLOW_ENV_PIN = "repro.env_pin"
MLFLOW_ENV_KIND = "repro.env_kind"
MLFLOW_ERROR = "repro.error"
MLFLOW_REUSED_COMMIT = "repro.reused_commit"
MLFLOW_SUPERSEDED_BY = "repro.superseded_by"  # a retry's run whose record is an earlier attempt's commit
MLFLOW_REPLAY_OF = "repro.replay_of"
MLFLOW_REPLAY_MODE = "repro.replay_mode"
MLFLOW_VERDICT = "repro.verify.verdict"
MLFLOW_TASK_VERDICT = "repro.verify.task_status"
MLFLOW_VERIFY_SUMMARY = "repro.verify.summary"  # this task's objects: verdicts and largest deviations (bounded)
MLFLOW_VERIFY_CAUSES = "repro.verify.likely_causes"  # what else differed from the original (bounded)

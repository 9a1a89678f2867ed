"""The thin Airflow shell: operators, the TaskFlow decorator, listeners and the plugin."""

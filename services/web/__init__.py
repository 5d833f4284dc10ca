"""Flask plumbing shared by gateway and users: JSON errors, body reading, settings (environment
variables), `observe_flask_app` (errors, metrics, tracing, demo faults in one call) and gunicorn_conf.py.
"""

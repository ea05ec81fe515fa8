"""The moderators' web app and the scoring API (FastAPI + Jinja2): `mmd app` serves it alone, `make serve`
beside the Prefect UI.

    urls.py     the URL contract (`url_for`): what e-mails, reports and artifacts link to
    auth.py     accounts and tokens from the environment, signed session cookies, CSRF
    server.py   `create_app(settings)`, `serve(...)`
    web.py      sign-in, home, the review queue and its labels, search, pictures
    manage.py   the cycle report, report files, model cards, the registry (promote, rollback)
    api.py      POST /api/score, GET /api/health;  scoring.py  the service behind it
    files.py    what may be served from the reports and data folders;  forms.py  request bodies
    catalog.py  the items with the moderators' agreed labels
"""

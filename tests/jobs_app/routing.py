"""A router as Celery's ``task_routes`` takes them: it decides by the call's arguments."""


def by_first_argument(name, args, kwargs, options, task=None, **rest):
    if args and args[0] == "urgent":
        return {"queue": "urgent"}
    return None

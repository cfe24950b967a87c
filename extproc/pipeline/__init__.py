"""The request pipeline: one exchange per client request, processors per phase, policy stages.

Read ``router.py`` top to bottom for a request's whole life; ``stage.py`` for how a
policy plugs in.
"""

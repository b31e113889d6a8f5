"""The web UI (`braid ui`): pages rendered on the server, live through server-sent events fed
by API-server watches, every request made as the person at the browser (their kubeconfig, or
the bearer token they signed in with). ``views`` and ``forms`` are pure; ``app`` is the only
part that talks HTTP."""

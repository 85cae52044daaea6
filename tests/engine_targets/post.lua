wrk.method = "POST"
wrk.body   = '{"inputs": [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]}'
wrk.headers["Content-Type"] = "application/json"

-- POST /v1/tasks (callback mode) with a small chat-like body; used by benchmarks/http.py
wrk.method = "POST"
wrk.path = "/v1/tasks"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"queue": "bench", "endpoint": "/v1/chat/completions", "data": {"model": "m", "messages": [{"role": "user", "content": "hello"}]}}'

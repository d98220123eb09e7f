print("uv-supervisor")

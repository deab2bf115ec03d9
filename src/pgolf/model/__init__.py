"""The GPT: the official baseline plus every leaderboard technique as a config field, each module
declaring the role of every parameter it creates; its inventory (parameter shapes and roles
from a meta-device build, FLOPs per token) and loading weights into it with a one-line error
when they do not fit. Depends on core."""

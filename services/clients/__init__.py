"""Clients of one service for another: the users client (gateway and worker use it) and the validation
of a new user, which the gateway and the users service both apply.
"""

"""fastnet.backend"""

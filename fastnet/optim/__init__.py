"""fastnet.optim"""

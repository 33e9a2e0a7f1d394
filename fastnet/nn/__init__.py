"""fastnet.nn"""

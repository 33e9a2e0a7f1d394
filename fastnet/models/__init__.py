"""fastnet.models"""

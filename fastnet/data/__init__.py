"""fastnet.data"""

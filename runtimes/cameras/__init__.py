"""Camera sources for visual inspection: CSI, V4L2, RTSP, video files and image folders by URI.

Open one through ``factoryedge.runtimes.registry.open_camera(uri, **options)``. OpenCV is
imported only when a camera is opened, so importing this package needs no cv2.
"""

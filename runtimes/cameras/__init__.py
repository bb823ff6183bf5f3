"""Camera sources for visual inspection: CSI, V4L2, RTSP, video files and image folders by URI.

Open one through ``factoryedge.runtimes.registry.open_camera(uri, **options)``, which picks
the class by scheme: ``csi.CsiCamera``, ``v4l2.V4l2Camera``, ``rtsp.RtspCamera``,
``video_file.VideoFileCamera``, ``image_folder.ImageFolderCamera``, all on ``base.Camera``
(the life cycle they share) and, but for folders, ``opencv.CaptureCamera``. OpenCV is
imported only when a camera is opened, so importing this package needs no cv2.
"""

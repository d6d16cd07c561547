"""Dataset formats: each reads files into plain records (images, masks, boxes) and imports
nothing above the shared record types (:mod:`cnnzoo.data.detection`,
:mod:`cnnzoo.data.segmentation`)."""

"""Object detection with our backbones: data (VOC / COCO), torchvision Faster R-CNN, training through the
shared trainer, pycocotools mAP, prediction and export."""

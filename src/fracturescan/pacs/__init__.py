"""Hospital integration: results as standard DICOM objects in the source study (a TID 1500
structured report and secondary captures of the captioned heatmaps), a DICOM node (Storage SCP)
and DICOMweb pull/push.

A front end over :mod:`fracturescan.service`, like the web app and the API: no ML here.
highdicom, pydicom, pynetdicom and dicomweb-client are optional (extra ``pacs``) and are
imported by the modules that need them.
"""

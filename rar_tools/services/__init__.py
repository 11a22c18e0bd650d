"""The operations, one service per concern, each over the shared `Components`:
`MemoryService` (add, remove, list, exemplar files), `SearchService` (retrieval, for whole images
and regions), `RecognitionService` (ranking, and retrieval + ranking), `DetectionService`."""

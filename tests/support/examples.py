"""Messages the tests share."""

# The example message of the product description, as a publisher sends it.
SPEC_EXAMPLE = {
    "id": "msg_1753859400_001",
    "timestamp": "2025-07-30T15:10:00.123Z",
    "type": "progress",
    "service": "knowledge-service",
    "source": "document_processing",
    "target": {"user_id": "user123", "session_id": "session456", "kb_id": "kb789"},
    "data": {
        "task_id": "task_abc123",
        "progress": 65,
        "stage": "embedding",
        "message": "正在生成向量嵌入...",
        "details": {"processed_chunks": 13, "total_chunks": 20, "current_file": "document.pdf"},
    },
    "metadata": {"priority": "normal", "ttl": 3600, "retry_count": 0},
}
